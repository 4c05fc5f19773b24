"""How a user entry point stops (`training.graceful_stop`): `ForwardSigterm` passes SIGTERM to this
process on to the children started in the block, which get the budget before SIGKILL (with none, the
previous handler runs); `UnplaceableTuneRun` stops the script on Tune's warning that no trial fits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sagemaker_ray_rl.training.graceful_stop import (
    TUNE_PLACEMENT_CHECK_ENV,
    ForwardSigterm,
    UnplaceableTuneRun,
    shorten_tune_placement_check,
)

HANDLES_TERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print("child got SIGTERM", flush=True), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""
IGNORES_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def run_child(code: str, forward: ForwardSigterm) -> tuple[int, str, float]:
    """Start `code` inside `forward`, SIGTERM this process once the child is ready; the child's
    exit status, output and the seconds from SIGTERM to its exit."""
    with forward:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
        status = child.wait(timeout=30)
        took = time.monotonic() - sent
        return status, child.stdout.read(), took


def test_sigterm_is_passed_on_and_the_child_exits_by_itself():
    forward = ForwardSigterm(budget_s=30)
    status, output, took = run_child(HANDLES_TERM, forward)
    assert status == 0 and "child got SIGTERM" in output
    assert len(forward.forwarded) == 1 and took < 10


def test_a_child_that_ignores_sigterm_is_killed_after_the_budget():
    forward = ForwardSigterm(budget_s=1.0)
    status, _, took = run_child(IGNORES_TERM, forward)
    assert status == -signal.SIGKILL
    assert 1.0 <= took < 10


def test_children_from_before_the_block_are_left_alone():
    older = subprocess.Popen([sys.executable, "-c", IGNORES_TERM.replace("SIG_IGN", "SIG_DFL")], stdout=subprocess.PIPE)
    try:
        assert older.stdout.readline().strip() == b"ready"
        forward = ForwardSigterm(budget_s=30)
        status, _, _ = run_child(HANDLES_TERM, forward)
        assert status == 0 and older.pid not in forward.forwarded
        assert older.poll() is None  # SIGTERM would have ended it
    finally:
        older.kill()
        older.wait()


def test_without_a_child_the_previous_handler_runs():
    calls: list[int] = []

    def handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with ForwardSigterm(budget_s=1):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler  # restored on leaving
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_default_handler_before_means_exit_143():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit) as raised, ForwardSigterm(budget_s=1):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert raised.value.code == 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_tunes_unplaceable_warning_stops_the_script_and_names_both_numbers():
    # Tune's own warning (ray.tune.execution.insufficient_resources_manager), split across reads.
    warning = (
        "2026-12-01 15:50:01,000\tWARNING insufficient_resources_manager.py:163 -- Ignore this message if the "
        "cluster is autoscaling. No trial is running and no new trial has been started within the last 20 "
        "seconds. This could be due to the cluster not having enough resources available. You asked for 6.0 "
        "CPUs and 0 GPUs per trial, but the cluster only has 2.0 CPUs and 0 GPUs available. Stop the tuning "
        "and adjust the required resources\n"
    )
    script = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watch = UnplaceableTuneRun("train.py", script_pids=lambda: [script.pid])
        watch("some other line\n" + warning[:150])
        assert watch.reason is None and script.poll() is None
        watch(warning[150:])
        assert script.wait(timeout=10) == -signal.SIGTERM
    finally:
        script.kill()
    assert watch.reason.startswith(
        "The Tune run of entry point train.py cannot be placed: a trial asks for 6 CPU(s) and 0 GPU(s), "
        "the Ray cluster has 2 CPU(s) and 0 GPU(s)"
    )


def test_tune_checks_placement_sooner_unless_the_job_says_otherwise():
    environ = {TUNE_PLACEMENT_CHECK_ENV[1]: "5"}
    shorten_tune_placement_check(environ)
    assert environ == {TUNE_PLACEMENT_CHECK_ENV[0]: "20", TUNE_PLACEMENT_CHECK_ENV[1]: "5"}
