"""A custom RLModule selected by hyperparameter: seed 003's ``custom_model``, new-stack style.

Hyperparameter ``custom_model`` names one of `MODELS` (the script's own hyperparameter; RLlib never
sees it), and RLlib's ``rl_module.model_config`` carries its settings:

    hyperparameters={"custom_model": "residual_mlp",
                     "rl_module.model_config": {"hidden_dim": 64, "num_blocks": 2}}

The module's code is pickled by value into the checkpoint (``register_pickle_by_value``), so env
runners on other hosts build it without this source dir and ``serve`` loads the exported model
without it either.
"""

import argparse

import models.residual_mlp
import ray.cloudpickle
from models.residual_mlp import ResidualMLPModule
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from sagemaker_ray_rl import Environment, build_experiment, build_metadata, export_model, run_experiment

MODELS = {"residual_mlp": ResidualMLPModule}

DEFAULTS = {
    "env": "CartPole-v1",
    "rl.training.config.lr": 0.0003,
    "rl.training.config.num_epochs": 6,
    "rl.training.stop.episode_return_mean": 450,
    "rl.training.stop.training_iteration": 50,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--custom_model", choices=sorted(MODELS), default="residual_mlp")
    args, _ = parser.parse_known_args()  # the toolkit passes every hyperparameter as --name value

    ray.cloudpickle.register_pickle_by_value(models.residual_mlp)
    environment = Environment.from_environ()
    experiment = build_experiment(DEFAULTS, ignore=["custom_model"])
    config = experiment.config.rl_module(rl_module_spec=RLModuleSpec(module_class=MODELS[args.custom_model]))
    result = run_experiment(
        config,
        stop=experiment.stop,
        storage_dir=environment.checkpoint_dir,
        checkpoint_frequency=experiment.checkpoint_frequency,
    )
    if result.stopped:
        return
    metadata = build_metadata(
        result.checkpoint_dir,
        algorithm="PPO",
        env=config.env,
        env_config={},
        metrics=result.metrics,
        hyperparameters=environment.hyperparameters,
    )
    export_model(result.checkpoint_dir, environment.model_dir, metadata)
    print(f"exported a {args.custom_model} RLModule: episode_return_mean {result.metrics['episode_return_mean']}")


if __name__ == "__main__":
    main()
