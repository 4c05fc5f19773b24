"""`user_script.ForwardSigterm`: SIGTERM to this process goes on to the children started in the
block, which get the budget before SIGKILL; with none, the previous handler runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sagemaker_ray_rl.training.user_script import ForwardSigterm

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
