"""Evaluation episodes of the exported checkpoint, after training (hyperparameter ``evaluation_episodes``).

RLlib evaluates during training when ``evaluation.evaluation_interval`` is set (its own evaluation
env runners, metric lines ``evaluation_return_*``). Evaluating the final policy once more, over a
fixed number of episodes, is what users compare jobs by; RLlib has no "evaluate at the end" switch,
so the checkpoint's weights and connector states are restored into an algorithm built from the same
config with a local evaluation env runner only, and RLlib's own ``Algorithm.evaluate`` runs the
episodes, greedily as the server answers by default: ``explore=False`` is set on the evaluation
config, because RLlib's new-stack evaluation env runners otherwise inherit the training config's
``explore=True`` (`AlgorithmConfig.get_evaluation_config_object`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagemaker_ray_rl.training.reporting import METRICS, lookup, metric_lines

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig


def evaluate_checkpoint(config: AlgorithmConfig, checkpoint_dir: Path, episodes: int) -> dict[str, Any]:
    """Run `episodes` evaluation episodes of the policy in `checkpoint_dir` and print metric lines.

    Args:
        config: the config the checkpoint was trained with (grid searches resolved).
        checkpoint_dir: an RLlib algorithm checkpoint.
        episodes: number of complete episodes (> 0).

    Returns:
        The evaluation metrics by `reporting.METRICS` name (``evaluation_return_mean``, ...).
    """

    evaluation = config.copy(copy_frozen=False)
    evaluation.env_runners(num_env_runners=0)
    evaluation.learners(num_learners=0)
    evaluation.evaluation(
        evaluation_interval=1,
        evaluation_num_env_runners=0,
        evaluation_duration=episodes,
        evaluation_duration_unit="episodes",
        evaluation_config={**_overrides(config.evaluation_config), "explore": False},
    )
    evaluation.resources(custom_resources_for_main_process={})
    algo = evaluation.build_algo()
    try:
        algo.restore_from_path(str(checkpoint_dir))
        result = {"evaluation": algo.evaluate()}
    finally:
        algo.stop()
    lines = [line for line in metric_lines(result) if line.startswith("evaluation_")]
    print(f"Evaluation of the exported policy over {episodes} episode(s):", flush=True)
    print("\n".join(lines), flush=True)
    return {name: lookup(result, path) for name, path in METRICS.items() if name.startswith("evaluation_")}


def _overrides(evaluation_config: Any) -> dict[str, Any]:
    """The user's evaluation overrides as a dict (RLlib accepts a dict, None or an `AlgorithmConfig`)."""
    if evaluation_config is None:
        return {}
    if isinstance(evaluation_config, dict):
        return dict(evaluation_config)
    return evaluation_config.to_dict()
