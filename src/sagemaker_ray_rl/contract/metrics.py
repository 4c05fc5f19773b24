"""SageMaker training metrics: lines on stdout that a metric definition's regex reads.

SageMaker applies each metric definition's ``Regex`` to every log line of the job and charts the
first group as a number (developer guide, "Define metrics"; the SDK's ``metric_definitions``). This
module holds that contract only: the float regex and the definition for a metric name. Which names
a job prints is its own business (`sagemaker_ray_rl.training.reporting`,
`sagemaker_ray_rl.offline.report`).
"""

from __future__ import annotations

from collections.abc import Iterable

#: SageMaker's float regex, as in the SDK docs.
FLOAT_REGEX = r"[-+]?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?"


def metric_definitions(names: Iterable[str]) -> list[dict[str, str]]:
    """Ready-to-paste ``metric_definitions`` for `sagemaker.estimator.Estimator`: one
    ``{"Name": name, "Regex": "name:?\\s*(<float>)"}`` per name. ``:?`` also matches the colon-less
    form of older notebooks' regexes. The regexes are not anchored, so no name may end with another.
    """
    return [{"Name": name, "Regex": rf"{name}:?\s*({FLOAT_REGEX})"} for name in names]
