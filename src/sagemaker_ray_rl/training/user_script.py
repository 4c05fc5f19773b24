"""A user entry point (``sagemaker_program``), run with the training toolkit's own functions.

The master runs the script exactly as the toolkit would without us (hyperparameters as
command-line arguments, ``SM_*`` variables, ``requirements.txt``); worker hosts only install its
source dir, so the modules it imports load in their env runners.

SIGTERM (``StopTrainingJob``, a spot interruption) reaches the script: the toolkit waits on the
script's process and never passes a signal on, so `run_user_entry_point` does (`ForwardSigterm`),
and gives the script the built-in experiment's time to checkpoint and exit
(``names.STOP_BUDGET_S``, 90 s of SageMaker's 120) before it is killed.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from sagemaker_ray_rl.contract import names


def install_user_code() -> None:
    """On a worker host: put the user's source dir (``sagemaker_submit_directory``) in the code dir
    and install its ``requirements.txt``, with the training toolkit's own functions, as
    `run_user_entry_point` does on the master, without running the script.

    Why: the script runs on the master only, but Ray runs its env runners (and learners) on every
    host and imports the script's modules there (a custom env, an RLModule class). Ray adds the
    driver's script directory to every worker's ``sys.path``; the code dir is the same path on each
    host, so after this those imports work on worker hosts too.
    """
    from sagemaker_training import entry_point, files
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    files.download_and_extract(uri=env.module_dir, path=toolkit_environment.code_dir)
    entry_point.install(env.user_entry_point, toolkit_environment.code_dir, capture_error=True)


def run_user_entry_point(stop_budget_s: float = names.STOP_BUDGET_S) -> None:
    """Run ``sagemaker_program`` the way the training toolkit does without a framework module, with
    SIGTERM passed on to it (`ForwardSigterm`).

    Args:
        stop_budget_s: seconds the script gets after SIGTERM before it is killed.

    Raises:
        sagemaker_training.errors.ExecuteUserScriptError: the script exited non-zero (the toolkit's
            own error, which it reports).
    """
    from sagemaker_training import entry_point
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    with ForwardSigterm(stop_budget_s):
        entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars())


class ForwardSigterm:
    """Within the block, SIGTERM to this process goes on to the processes it started in the block
    (the user's script, or ``pip`` while its requirements install), which get `budget_s` seconds to
    exit before SIGKILL; this process keeps waiting for them, so the toolkit reports the script's
    own exit status (0 after a script's checkpoint-and-exit handler) and the caller's clean-up runs
    afterwards.

    Only the direct children are signalled, as a container's PID 1 alone gets ``docker stop``'s
    SIGTERM: a shell entry point should ``exec`` its command or trap TERM and pass it on. A SIGTERM
    that finds no such child (the source dir still downloading) goes to the handler that was there
    before (on the master: `cluster.launcher.master_sigterm_exits`, which exits).

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
        import psutil

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
        import psutil

        return [child for child in psutil.Process().children() if child.pid not in self._before]

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.forwarded:
            return
        import psutil

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
        import psutil

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
