"""The training entry point: ``SAGEMAKER_TRAINING_MODULE=sagemaker_ray_rl.training:main``.

The training toolkit's ``train`` command (what SageMaker and ``docker run IMAGE train`` run) imports
this module and calls `main`. Two paths:

- a user entry point (``sagemaker_program`` / ``SAGEMAKER_PROGRAM``): the toolkit's own
  `sagemaker_training.entry_point.run` runs it exactly as it would without us (hyperparameters as
  command-line arguments, ``SM_*`` variables, ``requirements.txt``);
- otherwise the built-in experiment: hyperparameters -> checked spec -> RLlib config (all before
  Ray starts) -> Tune -> export to the model dir.

Failures write the failure file (``/opt/ml/output/failure``) with a one-paragraph reason and raise
`sagemaker_training.errors.ClientError`, which makes the toolkit exit 1 without overwriting it.
"""

from __future__ import annotations

import sys

from sagemaker_ray_rl.environment import Environment
from sagemaker_ray_rl.errors import SageMakerRayRLError

#: Characters of the failure file that SageMaker shows as FailureReason.
FAILURE_REASON_LIMIT = 1024


def main() -> None:
    """Run the job described by the container's contract; see the module docstring.

    Raises:
        sagemaker_training.errors.ClientError: the job failed for a reason the user can fix (the
            failure file says which).
        Exception: anything unexpected, after the failure file names it.
    """
    from sagemaker_training.errors import ClientError

    contract = Environment.from_environ()
    if contract.user_entry_point:
        run_user_entry_point()
        return
    try:
        train(contract)
    except SageMakerRayRLError as exc:
        write_failure(contract, f"{type(exc).__name__}: {exc}")
        raise ClientError(str(exc)) from exc
    except Exception as exc:
        write_failure(
            contract,
            f"Unexpected {type(exc).__name__} in sagemaker_ray_rl training: {exc}. "
            "The job log holds the traceback.",
        )
        raise


def train(contract: Environment) -> None:
    """The built-in experiment: check hyperparameters, train with Tune, export the checkpoint.

    Raises:
        HyperparameterError: before Ray starts.
        TrainingError: the trial failed.
        ModelLoadError: the checkpoint could not be read back for export.
    """
    from sagemaker_ray_rl.experiment import run_experiment
    from sagemaker_ray_rl.export import build_metadata, export_model
    from sagemaker_ray_rl.hyperparameters import build_algorithm_config, parse_hyperparameters

    spec = parse_hyperparameters(contract.hyperparameters, num_cpus=contract.num_cpus)
    config = build_algorithm_config(spec)
    print(
        f"Training {spec.algorithm} on {spec.env} with {spec.num_env_runners} env runner(s), "
        f"stop at {dict(spec.stop)}",
        flush=True,
    )
    result = run_experiment(
        config,
        stop=spec.stop,
        storage_dir=contract.checkpoint_dir,
        num_cpus=contract.num_cpus,
        num_gpus=contract.num_gpus,
    )
    metadata = build_metadata(
        result.checkpoint_dir,
        algorithm=spec.algorithm,
        env=spec.env,
        env_config=spec.env_config,
        metrics=result.metrics,
        hyperparameters=contract.hyperparameters,
        normalize_actions=config.normalize_actions,
        clip_actions=config.clip_actions,
    )
    path = export_model(result.checkpoint_dir, contract.model_dir, metadata)
    print(f"Exported {result.checkpoint_dir} to {contract.model_dir} ({path.name} written)", flush=True)


def run_user_entry_point() -> None:
    """Run ``sagemaker_program`` the way the training toolkit does without a framework module."""
    from sagemaker_training import entry_point
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars())


def write_failure(contract: Environment, reason: str) -> None:
    """Write `reason` to the failure file unless one exists (the toolkit's rule: first writer wins).

    Also prints it to stderr, so the job log says the same.
    """
    print(f"Training failed: {reason}", file=sys.stderr, flush=True)
    path = contract.failure_file
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(reason.split())[:FAILURE_REASON_LIMIT] + "\n")
