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

from sagemaker_ray_rl import build_experiment, train_and_export

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
    experiment = build_experiment(DEFAULTS, ignore=["custom_model"])
    config = experiment.config.rl_module(rl_module_spec=RLModuleSpec(module_class=MODELS[args.custom_model]))
    train_and_export(experiment, config)


if __name__ == "__main__":
    main()
