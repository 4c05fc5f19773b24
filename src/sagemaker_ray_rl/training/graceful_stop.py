"""How a training process stops: on SIGTERM, and when its Tune run can never start.

SageMaker stops a training job (``StopTrainingJob``, a spot interruption, ``max_run``) with SIGTERM to
every host's ``train`` and kills the job 120 s later; ``/opt/ml/checkpoints`` is synced to
``checkpoint_s3_uri`` and restored on the restarted job. Within that budget (``names.STOP_BUDGET_S``,
90 s) the master's training leaves a checkpoint the restart resumes from. Three ways, one per kind of
training process on the master:

- **a Tune run of ours** (the built-in experiment, a script's `experiment.run_experiment`):
  `GracefulStop` turns SIGTERM into "checkpoint now, then stop Tune":

  1. the driver touches a marker file; the algorithm's ``on_train_result`` callback (in the trial
     actor, which runs on the master host: `cluster.placement.place_actors`) sees it and sets Tune's
     ``should_checkpoint`` in that iteration's result, so Tune checkpoints the trial right after the
     iteration that is running;
  2. once Tune reports that checkpoint (or after `CHECKPOINT_WAIT_S` seconds, when an iteration is
     too long), the driver sends itself SIGUSR1, Tune's own signal for "stop and save the experiment
     state"; the trial is left unfinished, so ``Tuner.restore`` resumes it from the newest checkpoint
     with its iteration, step and time counters (`experiment.run_experiment` does that on start).

  Why not Tune's SIGINT/SIGUSR1 alone: they save the experiment state but not a new trial
  checkpoint, so up to ``checkpoint_frequency`` iterations of work would be lost.

  However a trial ends (a stop criterion, SIGTERM), its env runners have been ended by ``ray.kill``
  before Tune releases the trial's placement group (`wait_for_env_runners_at_stop`), so that the
  SIGTERM Ray then sends to what is left in it finds none in Python's teardown of the actor, where
  it would log a ``SystemExit`` traceback from ``EnvRunner.__del__``.

- **a user entry point** (`user_script.run_user_entry_point`): the training toolkit waits on the
  script's process and never passes a signal on, so `ForwardSigterm` does, and gives the script the
  same budget to checkpoint and exit before it is killed;
- **a user entry point whose Tune run can never be placed** (a trial asks for more CPUs or GPUs than
  the cluster has): Tune only warns and waits, for the job's whole ``MaxRuntimeInSeconds``;
  `UnplaceableTuneRun`, fed the script's stderr, stops the script on that warning with SIGTERM and
  keeps the failure reason.

The module keeps its name (``graceful_stop``): Tune pickles `StopAfterCheckpoint` by its module path
into the experiment state (``tuner.pkl``), and ``Tuner.restore`` imports it from there, so a rename
would keep a job from resuming an experiment an earlier image saved.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import psutil
import ray
from ray.tune import Callback

from sagemaker_ray_rl.contract import names

#: Seconds to wait for the checkpoint of the running iteration before stopping anyway (SageMaker
#: kills the job 120 s after SIGTERM; Tune needs a few seconds to save its state after this).
CHECKPOINT_WAIT_S = names.STOP_BUDGET_S


def request_checkpoint_if_stopping(marker: str, *, result: dict[str, Any], **_: Any) -> None:
    """RLlib ``on_train_result`` callback: ask Tune for a checkpoint once `marker` exists."""
    if os.path.exists(marker):
        result["should_checkpoint"] = True


class StopAfterCheckpoint(Callback):
    """Tune callback: once the marker exists, the next checkpoint stops Tune (SIGUSR1 to itself).

    It holds only the marker's path, because Tune pickles its callbacks into the experiment state
    and uses the pickled ones when the experiment is restored.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        if os.path.exists(self.marker):
            print(f"Checkpoint saved after SIGTERM: {checkpoint.path}", flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)


class GracefulStop:
    """Turns SIGTERM into "checkpoint now, then stop Tune" for the experiment stored in
    `storage_dir` (module docstring).

    Use it as a context manager around ``Tuner.fit()`` in the main thread, give Tune
    `tune_callback`, and add `rllib_callback` to the algorithm config's ``on_train_result``.

    Attributes:
        requested: whether SIGTERM arrived.
        marker: the file that says so to the trial actor and to Tune's callback (in the temp dir,
            named after `storage_dir`, so a restored experiment's callbacks find it too).
    """

    def __init__(self, storage_dir: Path, wait_s: float = CHECKPOINT_WAIT_S) -> None:
        digest = hashlib.sha1(str(Path(storage_dir).resolve()).encode()).hexdigest()[:16]
        self.marker = Path(tempfile.gettempdir()) / f"sagemaker-ray-rl-stop-{digest}"
        self.wait_s = wait_s
        self.requested = False
        self._previous: Any = None
        self._timer: threading.Timer | None = None

    @property
    def rllib_callback(self) -> functools.partial:
        """The ``on_train_result`` callback for the algorithm config (picklable)."""
        return functools.partial(request_checkpoint_if_stopping, str(self.marker))

    @property
    def tune_callback(self) -> StopAfterCheckpoint:
        """The Tune callback that stops the run after the checkpoint."""
        return StopAfterCheckpoint(str(self.marker))

    def __enter__(self) -> GracefulStop:
        self.marker.unlink(missing_ok=True)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        self.marker.unlink(missing_ok=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.requested:
            return
        self.requested = True
        print("SIGTERM: checkpointing after the running iteration, then stopping (a restart resumes)", flush=True)
        self.marker.touch()
        self._timer = threading.Timer(self.wait_s, os.kill, (os.getpid(), signal.SIGUSR1))
        self._timer.daemon = True
        self._timer.start()


#: Seconds a stopping trial waits for its env runners to be gone (`wait_for_env_runners_at_stop`).
ENV_RUNNER_EXIT_WAIT_S = 10.0


def wait_for_env_runners_at_stop(algorithm: Any, **_: Any) -> None:
    """RLlib ``on_algorithm_init`` callback: when the algorithm stops (``Algorithm.cleanup``, which a
    Tune trial runs at its end), its remote env runners are dead, ended by ``ray.kill``, before it
    returns.

    Why: RLlib's cleanup ends each env runner with ``ray.kill`` and at once drops its handle; Tune,
    as soon as the trial's ``stop`` returns, removes the trial's placement group, and the raylet
    sends SIGTERM to every worker still in it. When the dropped handle reaches Ray's GCS before the
    kill, the env runner leaves the slow way ("all references to the actor were removed": Python's
    own teardown of the actor) instead of ``ray.kill``'s immediate exit, and the SIGTERM that arrives
    meanwhile makes Ray's worker handler raise ``SystemExit(1)`` in the first Python code the
    teardown runs, ``EnvRunner.__del__``: the job log then shows ``Exception ignored in: <function
    EnvRunner.__del__ ...>`` and a ``SystemExit: 1`` traceback after a successful job. Holding the
    handles until Ray says each env runner is dead (its ``ping`` fails) leaves ``ray.kill``'s exit,
    which runs no Python code, the only way out; a SIGTERM that still reaches such an env runner in
    its last milliseconds finds no ``__del__`` running. At most `ENV_RUNNER_EXIT_WAIT_S` seconds;
    when RLlib's internals differ, nothing is held.
    """
    cleanup = algorithm.cleanup

    def cleanup_then_wait() -> None:
        held = _remote_env_runners(algorithm)
        try:
            cleanup()
        finally:
            _wait_until_dead(held, ENV_RUNNER_EXIT_WAIT_S)

    algorithm.cleanup = cleanup_then_wait


def _remote_env_runners(algorithm: Any) -> list[Any]:
    """The actor handles of the algorithm's remote env runners (training and evaluation), from
    RLlib 2.60's ``EnvRunnerGroup._worker_manager``; [] when that is not there."""
    handles: list[Any] = []
    for name in ("env_runner_group", "eval_env_runner_group"):
        manager = getattr(getattr(algorithm, name, None), "_worker_manager", None)
        try:
            handles.extend(manager.actors().values())
        except (AttributeError, TypeError):
            continue
    return handles


def _wait_until_dead(actors: list[Any], timeout_s: float) -> None:
    """Return once each of `actors` answers ``ping`` with an error (Ray says it is dead), or after
    `timeout_s` seconds in all."""
    deadline = time.monotonic() + timeout_s
    for actor in actors:
        while time.monotonic() < deadline:
            try:
                ray.get(actor.ping.remote(), timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.RayError:  # dead (RayActorError), or not answering in time
                break
            time.sleep(0.05)


#: Seconds a Tune run in the script may have no trial running before Tune checks whether any pending
#: trial fits in the cluster at all (Tune's own check, `ray.tune.execution.insufficient_resources_manager`;
#: its default is 60 s). When none fits, the script is stopped and the failure file says why.
TUNE_PLACEMENT_CHECK_S = 20
#: Tune's two variables for that delay (one for clusters started by Ray's autoscaler).
TUNE_PLACEMENT_CHECK_ENV = (
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S",
    "TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S_AUTOSCALER",
)
#: Tune's warning when no pending trial can ever be placed (MSG_TUNE_INSUFFICIENT / MSG_TRAIN_INSUFFICIENT).
_UNPLACEABLE = re.compile(
    r"You asked for (?P<cpus>[\d.]+) CPUs and (?P<gpus>[\d.]+) GPUs(?: per trial)?, but the cluster only has "
    r"(?P<have_cpus>[\d.]+) CPUs and (?P<have_gpus>[\d.]+) GPUs available"
)


def shorten_tune_placement_check(environ: MutableMapping[str, str] = os.environ) -> None:
    """Make the script's Tune check whether its trials fit after `TUNE_PLACEMENT_CHECK_S` seconds
    instead of Tune's 60 (`TUNE_PLACEMENT_CHECK_ENV` in `environ`, unless already set there), so
    that `UnplaceableTuneRun` sees the warning sooner."""
    for name in TUNE_PLACEMENT_CHECK_ENV:
        environ.setdefault(name, str(TUNE_PLACEMENT_CHECK_S))


class ForwardSigterm:
    """Within the block, SIGTERM to this process goes on to the processes it started in the block
    (the user's script, or ``pip`` while its requirements install), which get `budget_s` seconds to
    exit before SIGKILL; this process keeps waiting for them, so the toolkit reports the script's
    own exit status (0 after a script's checkpoint-and-exit handler) and the caller's clean-up runs
    afterwards.

    Only the direct children are signalled, as a container's PID 1 alone gets ``docker stop``'s
    SIGTERM: a shell entry point should ``exec`` its command or trap TERM and pass it on. A SIGTERM
    that finds no such child (the source dir still downloading) goes to the handler that was there
    before (on the master of a cluster: `cluster.launcher.master_sigterm_exits`, which exits; on one
    host, Python's default: exit 143).

    Used in the main thread; elsewhere it does nothing (Python runs signal handlers there only).

    Attributes:
        budget_s: seconds between the forwarded SIGTERM and SIGKILL.
        forwarded: pids SIGTERM was passed to (empty until SIGTERM arrives).
    """

    def __init__(self, budget_s: float = names.STOP_BUDGET_S) -> None:
        self.budget_s = budget_s
        self.forwarded: list[int] = []
        self._before: set[int] = set()
        self._previous: Any = None
        self._timer: threading.Timer | None = None
        self._active = False

    def __enter__(self) -> ForwardSigterm:
        if threading.current_thread() is threading.main_thread():
            self._before = {child.pid for child in psutil.Process().children()}
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._active:
            signal.signal(signal.SIGTERM, self._previous)

    def _started_here(self) -> list[Any]:
        return [child for child in psutil.Process().children() if child.pid not in self._before]

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.forwarded:
            return
        children = self._started_here()
        for child in children:
            try:
                child.send_signal(signal.SIGTERM)
                self.forwarded.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        if not self.forwarded:
            previous = self._previous
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise SystemExit(128 + signum)
            return
        print(
            f"SIGTERM: passed on to the entry point (pid {', '.join(map(str, self.forwarded))}); it has "
            f"{self.budget_s:g} s to checkpoint and exit before it is killed",
            file=sys.stderr,
            flush=True,
        )
        self._timer = threading.Timer(self.budget_s, self._kill, (children,))
        self._timer.daemon = True
        self._timer.start()

    def _kill(self, children: list[Any]) -> None:
        for child in children:
            try:
                if child.is_running():
                    print(
                        f"SIGTERM: entry point pid {child.pid} still running after {self.budget_s:g} s; killing it",
                        file=sys.stderr,
                        flush=True,
                    )
                    for process in [*child.children(recursive=True), child]:
                        process.kill()
            except psutil.NoSuchProcess:
                pass


class UnplaceableTuneRun:
    """Stops the user script when its Tune run can never start a trial, instead of letting it wait
    for the job's whole ``MaxRuntimeInSeconds``.

    Tune checks, after `TUNE_PLACEMENT_CHECK_S` seconds without a running trial, whether any
    pending trial fits in the cluster's CPUs and GPUs, and only logs a warning when none does
    ("You asked for 5.0 CPUs and 0 GPUs per trial, but the cluster only has 2.0 CPUs and 0 GPUs
    available"). Fed the script's stderr (`script_output.output_tail`), this sends SIGTERM to the script on that
    warning and keeps a failure reason naming both numbers.

    Attributes:
        reason: the failure reason once the script was stopped, else None.
    """

    def __init__(self, entry_point: str, script_pids: Callable[[], list[int]] | None = None) -> None:
        self.entry_point = entry_point
        self.reason: str | None = None
        self._script_pids = script_pids or _child_pids
        self._carry = ""

    def __call__(self, text: str) -> None:
        """Look at more of the script's stderr (any chunking; lines may be split between calls)."""
        if self.reason is not None:
            return
        lines = (self._carry + text).split("\n")
        self._carry = lines.pop()[-4096:]
        for line in lines:
            found = _UNPLACEABLE.search(line)
            if found:
                self._stop(found)
                return

    def _stop(self, found: re.Match[str]) -> None:
        cpus, gpus = float(found["cpus"]), float(found["gpus"])
        have_cpus, have_gpus = float(found["have_cpus"]), float(found["have_gpus"])
        self.reason = (
            f"The Tune run of entry point {self.entry_point} cannot be placed: a trial asks for {cpus:g} CPU(s) and "
            f"{gpus:g} GPU(s), the Ray cluster has {have_cpus:g} CPU(s) and {have_gpus:g} GPU(s); no trial started "
            f"within {TUNE_PLACEMENT_CHECK_S} s, so the script was stopped. Ask for less (RLlib: num_env_runners, "
            "num_learners, num_cpus_per_env_runner, num_gpus_per_learner) or use a larger instance type or more hosts"
        )
        print(f"[sagemaker-ray-rl] {self.reason}", file=sys.stdout, flush=True)
        for pid in self._script_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _child_pids() -> list[int]:
    """This process's direct children (the user script the toolkit started), from ``/proc``."""
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me:
            pids.append(int(entry.name))
    return pids
