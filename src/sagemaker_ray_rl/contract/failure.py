"""The failure file: why a training job failed, in the words SageMaker shows the user.

SageMaker shows the first 1024 characters of ``/opt/ml/output/failure`` as the job's
``FailureReason``; the training toolkit never overwrites an existing one (first writer wins), so the
most specific reason, written first, is the one the user sees.
"""

from __future__ import annotations

import sys

from sagemaker_ray_rl.contract.environment import Environment

#: Characters of the failure file that SageMaker shows as FailureReason.
FAILURE_REASON_LIMIT = 1024


def write_failure(contract: Environment, reason: str) -> None:
    """Write `reason` (whitespace collapsed, cut to `FAILURE_REASON_LIMIT`) to the failure file
    unless one exists. Also prints it to stderr, so the job log says the same.

    Never raises: it runs while a job is already failing, and a full disk or an unwritable
    ``/opt/ml/output`` must not replace the reason with an ``OSError``. When the file cannot be
    written, stderr says so (the reason is printed first either way), and a partly written file is
    removed so that the toolkit's own failure message is not lost behind an empty one.
    """
    text = " ".join(reason.split())[:FAILURE_REASON_LIMIT] + "\n"
    _to_stderr(f"Training failed: {reason}")
    path = contract.failure_file
    try:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        try:
            if path.is_file() and path.read_text() != text:
                path.unlink()
        except OSError:
            pass
        _to_stderr(f"Could not write the failure file {path} ({type(exc).__name__}: {exc}); the reason is above")


def _to_stderr(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed or its pipe gone: nothing left to tell
        pass
