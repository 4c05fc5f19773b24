"""SIGTERM during training: checkpoint, then stop so that the next run resumes.

SageMaker stops a training job (``StopTrainingJob``, a spot interruption, ``max_run``) with SIGTERM and
kills it 120 s later; ``/opt/ml/checkpoints`` is synced to ``checkpoint_s3_uri`` and restored on the
restarted job. What happens here on SIGTERM:

1. the driver touches a marker file; the algorithm's ``on_train_result`` callback (in the trial actor,
   which runs on the master host: `cluster.placement.place_actors`) sees it and sets Tune's
   ``should_checkpoint`` in that iteration's result, so Tune checkpoints the trial right after the
   iteration that is running;
2. once Tune reports that checkpoint (or after `CHECKPOINT_WAIT_S` seconds, when an iteration is too
   long), the driver sends itself SIGUSR1, Tune's own signal for "stop and save the experiment state";
   the trial is left unfinished, so ``Tuner.restore`` resumes it from the newest checkpoint with its
   iteration, step and time counters (`experiment.run_experiment` does that on start).

Why not Tune's SIGINT/SIGUSR1 alone: they save the experiment state but not a new trial checkpoint,
so up to ``checkpoint_frequency`` iterations of work would be lost.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

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
