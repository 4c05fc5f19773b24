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
    unless one exists. Also prints it to stderr, so the job log says the same."""
    print(f"Training failed: {reason}", file=sys.stderr, flush=True)
    path = contract.failure_file
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(reason.split())[:FAILURE_REASON_LIMIT] + "\n")
