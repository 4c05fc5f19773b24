"""The failure file: why a training job failed, in the words SageMaker shows the user.

SageMaker shows the first 1024 characters of ``/opt/ml/output/failure`` as the job's
``FailureReason``; the training toolkit never overwrites an existing one (first writer wins), so the
most specific reason, written first, is the one the user sees.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from sagemaker_ray_rl.contract.environment import Environment

#: Characters of the failure file that SageMaker shows as FailureReason.
FAILURE_REASON_LIMIT = 1024


def write_failure(environment: Environment, reason: str) -> bool:
    """Write `reason` (whitespace collapsed, cut to `FAILURE_REASON_LIMIT`) to the failure file
    unless one exists. Also prints it to stderr, so the job log says the same.

    Never raises: it runs while a job is already failing, and a full disk or an unwritable
    ``/opt/ml/output`` must not replace the reason with an ``OSError``. When the file cannot be
    written, stderr says so (the reason is printed first either way). What a full disk let through
    is left in place: a failure file that exists, even empty, keeps the training toolkit from trying
    to write its own, which on the same disk would raise inside its error handler and make it exit 0.

    Returns:
        Whether a failure file exists now (this one or an earlier one). When False, the caller must
        make sure the process exits non-zero itself (`exit_failed`).
    """
    text = " ".join(reason.split())[:FAILURE_REASON_LIMIT] + "\n"
    _to_stderr(f"Training failed: {reason}")
    path = environment.failure_file
    try:
        if path.exists():
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return True
    except OSError as exc:
        _to_stderr(f"Could not write the failure file {path} ({type(exc).__name__}: {exc}); the reason is above")
        try:
            return path.exists()
        except OSError:
            return False


def exit_failed(status: int = 1) -> NoReturn:
    """End the process at once with `status`, after flushing stdout and stderr.

    For a failure whose file could not be written (`write_failure` returned False): the training
    toolkit's ``train`` writes its own failure file in its error handler, and when that raises too,
    its ``finally`` exits with status 0, so a failed job would look successful. ``os._exit`` skips
    the toolkit's handler; call it only after the job's own clean-up (the Ray cluster) has run.
    """
    _to_stderr(f"Exiting with status {status}: no failure file could be written")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _to_stderr(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or its pipe gone: nothing left to tell
        pass
