"""How a training process stops (`training.graceful_stop`): `ForwardSigterm` passes SIGTERM to this
process on to the children started in the block, which get the budget before SIGKILL (with none, the
previous handler runs); `UnplaceableTuneRun` stops the script on Tune's warning that no trial fits;
`wait_for_env_runners_at_stop` holds a stopping algorithm's env runners until they are dead."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import ray
from ray.rllib.env.env_runner_group import EnvRunnerGroup
from ray.rllib.utils.actor_manager import FaultTolerantActorManager

from sagemaker_ray_rl.training import graceful_stop
from sagemaker_ray_rl.training.experiment import _with_callback
from sagemaker_ray_rl.training.graceful_stop import (
    TUNE_PLACEMENT_CHECK_ENV,
    ForwardSigterm,
    UnplaceableTuneRun,
    shorten_tune_placement_check,
    wait_for_env_runners_at_stop,
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


class FakeEnvRunner:
    """An env runner's actor handle: ``ping`` answers until `pings_left` runs out, then Ray says
    it is dead (`ray.get` is replaced in these tests)."""

    def __init__(self, events: list[str], name: str, pings_left: int | None) -> None:
        self.events, self.name, self.pings_left = events, name, pings_left
        self.ping = self

    def remote(self) -> FakeEnvRunner:
        self.events.append(f"ping {self.name}")
        return self


def fake_ray_get(ref: FakeEnvRunner, timeout: float | None = None) -> str:
    if ref.pings_left is not None and ref.pings_left <= 0:
        ref.events.append(f"{ref.name} dead")
        raise ray.exceptions.ActorDiedError()
    if ref.pings_left is not None:
        ref.pings_left -= 1
    return "pong"


class FakeAlgorithm:
    """RLlib 2.60's shape: ``env_runner_group._worker_manager.actors()``; `cleanup` drops the
    handles as RLlib's ``FaultTolerantActorManager.clear`` does after ``ray.kill``."""

    def __init__(self, events: list[str], runners: dict[int, FakeEnvRunner]) -> None:
        self.events = events
        self.env_runner_group = SimpleNamespace(_worker_manager=SimpleNamespace(actors=lambda: runners))
        self.eval_env_runner_group = None
        self._runners = runners

    def cleanup(self) -> None:
        self.events.append("cleanup")
        self._runners.clear()


def test_a_stopping_algorithm_holds_its_env_runners_until_ray_says_they_are_dead(monkeypatch):
    monkeypatch.setattr(graceful_stop.ray, "get", fake_ray_get)
    events: list[str] = []
    algorithm = FakeAlgorithm(events, {1: FakeEnvRunner(events, "a", 2), 2: FakeEnvRunner(events, "b", 0)})
    wait_for_env_runners_at_stop(algorithm, metrics_logger=None)
    algorithm.cleanup()  # what Trainable.stop calls
    assert events == ["cleanup", "ping a", "ping a", "ping a", "a dead", "ping b", "b dead"]


def test_an_env_runner_that_never_dies_delays_the_stop_by_the_wait_at_most(monkeypatch):
    monkeypatch.setattr(graceful_stop.ray, "get", fake_ray_get)
    monkeypatch.setattr(graceful_stop, "ENV_RUNNER_EXIT_WAIT_S", 0.3)
    events: list[str] = []
    algorithm = FakeAlgorithm(events, {1: FakeEnvRunner(events, "a", None)})
    wait_for_env_runners_at_stop(algorithm)
    started = time.monotonic()
    algorithm.cleanup()
    assert 0.3 <= time.monotonic() - started < 2 and events[0] == "cleanup"


def test_without_rllibs_env_runner_groups_the_cleanup_runs_alone():
    events: list[str] = []
    algorithm = SimpleNamespace(cleanup=lambda: events.append("cleanup"))
    wait_for_env_runners_at_stop(algorithm)
    algorithm.cleanup()
    assert events == ["cleanup"]


def test_rllib_keeps_the_env_runner_handles_where_the_stop_looks_for_them():
    # Ray 2.60: EnvRunnerGroup._worker_manager is a FaultTolerantActorManager, whose actors()
    # maps ids to handles; after an upgrade that moved them, nothing would be held.
    assert "self._worker_manager = FaultTolerantActorManager(" in inspect.getsource(EnvRunnerGroup.__init__)
    assert "return self._actors" in inspect.getsource(FaultTolerantActorManager.actors)


def test_run_experiment_keeps_a_scripts_own_algorithm_init_callbacks():
    def own(**_):
        pass

    assert _with_callback(None, wait_for_env_runners_at_stop) == [wait_for_env_runners_at_stop]
    assert _with_callback(own, wait_for_env_runners_at_stop) == [own, wait_for_env_runners_at_stop]
    twice = _with_callback([own, wait_for_env_runners_at_stop], wait_for_env_runners_at_stop)
    assert twice == [own, wait_for_env_runners_at_stop]
