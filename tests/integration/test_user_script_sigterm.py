"""SIGTERM reaches a user entry point run through the real `train` command (the toolkit's own
runner), which checkpoints in its handler and exits in time; a restart finds the checkpoint."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import BIN, job_environ, run_train, write_job
from integration.conftest import free_port

from sagemaker_ray_rl.contract.names import STOP_BUDGET_S

pytestmark = pytest.mark.integration

SCRIPT = """
import json, os, signal, sys, time

import ray

state = os.path.join("/opt/ml/checkpoints" if not os.environ.get("SAGEMAKER_BASE_DIR") else
                     os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "checkpoints"), "state.json")
step, last = 0, 10 ** 6
if os.path.exists(state):
    step = json.load(open(state))["step"]
    last = step + 5  # the restart finishes the job
    print(f"user script resumed at step {step}", flush=True)

def on_sigterm(signum, frame):
    time.sleep(2)  # a checkpoint takes a while; train must wait for it
    os.makedirs(os.path.dirname(state), exist_ok=True)
    json.dump({"step": step}, open(state, "w"))
    print(f"user script checkpointed step {step} on SIGTERM", flush=True)
    sys.exit(0)

ray.init()  # the job's cluster (RAY_ADDRESS), as a real script would
signal.signal(signal.SIGTERM, on_sigterm)  # after ray.init(), whose own handler would replace it
print(f"user script on a Ray cluster of {len(ray.nodes())} node(s)", flush=True)
while True:
    step += 1
    if step % 10 == 0:
        print(f"user script step {step}", flush=True)
    if step >= last:
        break
    time.sleep(0.1)
"""


def test_sigterm_reaches_the_user_script_which_checkpoints_and_a_restart_resumes(tmp_path: Path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "checkpointing.py").write_text(textwrap.dedent(SCRIPT))
    base = write_job(
        tmp_path / "job",
        {
            "sagemaker_program": "checkpointing.py",
            "sagemaker_submit_directory": str(code),
            "ray.gcs_port": free_port(),  # not 6379: other jobs' heads may run on this machine
        },
    )
    env = job_environ(base)
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=env, check=True)
    proc = subprocess.Popen([str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    lines: list[str] = []
    sent = None
    assert proc.stdout is not None
    for line in proc.stdout:  # one reader for the whole output
        lines.append(line)
        if sent is None and line.strip() == "user script step 20":
            proc.send_signal(signal.SIGTERM)  # as SageMaker signals the container's PID 1
            sent = time.monotonic()
    proc.wait()
    watchdog.cancel()
    output = "".join(lines)
    assert sent is not None, output[-4000:]
    took = time.monotonic() - sent
    assert "SIGTERM: passed on to the entry point" in output, output[-4000:]
    assert "user script checkpointed step" in output, output[-4000:]
    assert proc.returncode == 0, output[-4000:]
    assert took < STOP_BUDGET_S, f"stopping took {took:.0f} s"
    print(f"SIGTERM to train -> train exited in {took:.1f} s")
    saved = (base / "checkpoints" / "state.json").read_text()

    second = run_train(base, timeout=120)
    assert second.returncode == 0, second.output[-4000:]
    step = json.loads(saved)["step"]
    assert step >= 20
    assert f"user script resumed at step {step}" in second.output, second.output[-4000:]


def test_a_failing_user_script_fails_the_job_even_when_no_failure_file_can_be_written(tmp_path: Path):
    # The toolkit alone would raise writing its failure file, and its `finally` would exit 0.
    code = tmp_path / "code"
    code.mkdir()
    (code / "fails.py").write_text("import sys\nprint('user script failing', flush=True)\nsys.exit(3)\n")
    base = write_job(
        tmp_path / "job",
        {"sagemaker_program": "fails.py", "sagemaker_submit_directory": str(code), "ray.gcs_port": free_port()},
    )
    env = job_environ(base)
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=env, check=True)
    shutil.rmtree(base / "output")
    (base / "output").write_text("a file where the output dir should be")
    run = subprocess.run([str(BIN / "train")], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.stdout + run.stderr)[-4000:]
    assert "user script failing" in run.stdout + run.stderr
    assert "Exiting with status 1: no failure file could be written" in run.stderr
