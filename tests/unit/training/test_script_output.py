"""The job's output while a user script runs (`training.script_output`): copied on unchanged and
in whole lines, its end kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from sagemaker_ray_rl.training.script_output import output_tail


def test_output_tail_keeps_a_childs_stderr_and_passes_it_on(capfd):
    with output_tail(limit=100) as tail:
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('a' * 300 + 'THE END')"], check=True)
    assert tail().endswith("THE END") and len(tail()) == 100
    assert capfd.readouterr().err.endswith("a" * 300 + "THE END")


def test_the_tail_of_stdout_is_kept_the_same_way(capfd):
    with output_tail(limit=100, fd=1) as tail:
        subprocess.run([sys.executable, "-c", "print('b' * 300 + 'THE END')"], check=True)
    assert tail().endswith("THE END\n") and len(tail()) == 100
    assert capfd.readouterr().out.endswith("b" * 300 + "THE END\n")


def merged_output_of(script: str) -> str:
    """Run `script` as the job's entry point with the job's stdout and stderr in one pipe (as ``docker
    run`` and CI runners have them), both copied by `output_tail`; that pipe's whole text."""
    job = textwrap.dedent(f"""
        import subprocess, sys
        from sagemaker_ray_rl.training.script_output import output_tail
        with output_tail(partial_wait_s=30) as err, output_tail(fd=1, partial_wait_s=30) as out:
            subprocess.run([sys.executable, "-c", {textwrap.dedent(script)!r}], check=True)
    """)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(
        [sys.executable, "-c", job], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60
    )
    assert run.returncode == 0, run.stdout
    return run.stdout.decode()


def test_a_line_printed_in_pieces_stays_whole_when_another_stream_writes_meanwhile():
    # PYTHONUNBUFFERED: print() writes each argument, separator and end on its own, and another
    # thread (Ray's log monitor) may write a stderr line between them.
    output = merged_output_of("""
        import sys, time
        sys.stdout.write("RAY_CPUS")
        time.sleep(0.2)
        sys.stderr.write("(raylet) a line of its own\\n")
        time.sleep(0.2)
        sys.stdout.write(" 2 SM_NUM_CPUS 2\\n")
    """)
    assert sorted(output.splitlines()) == ["(raylet) a line of its own", "RAY_CPUS 2 SM_NUM_CPUS 2"]


def test_long_output_is_copied_byte_for_byte_in_whole_lines():
    # Lines far beyond one pipe write (4 KiB), a line longer than the copier's read, \r progress
    # updates and a last line without its end: all of it arrives, unchanged and in order.
    output = merged_output_of("""
        import sys
        for i in range(5000):
            sys.stdout.write(f"line {i:05d} " + "x" * (i % 97) + "\\n")
        sys.stdout.write("y" * 200000 + "\\n")
        for p in range(0, 101, 10):
            sys.stdout.write(f"\\r{p:3d}%")
        sys.stdout.write("\\nno end")
    """)
    lines = [f"line {i:05d} " + "x" * (i % 97) for i in range(5000)]
    progress = "".join(f"\r{p:3d}%" for p in range(0, 101, 10))
    assert output == "\n".join(lines) + "\n" + "y" * 200000 + "\n" + progress + "\nno end"


def test_a_line_without_its_end_is_written_once_the_wait_is_over(capfd):
    # A progress bar rewrites one line and ends it last: it shows while it runs.
    with output_tail(fd=1, partial_wait_s=0.1):
        child = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.stdout.write('50%'); time.sleep(5)"])
        seen, deadline = "", time.monotonic() + 4
        while "50%" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += capfd.readouterr().out
        still_running = child.poll() is None
        child.kill()
        child.wait()
    assert "50%" in seen and still_running
