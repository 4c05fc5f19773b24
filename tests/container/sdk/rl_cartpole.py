"""A user entry point for the ``RLEstimator`` test (``sdk2_rlestimator_local.py``): the README's
script pattern, short. The job's hyperparameters (``stop.training_iteration``, ``rl.training.config.*``)
win over the defaults below; the checkpoint is exported to ``SM_MODEL_DIR`` for ``serve``.
"""

import gymnasium as gym

from sagemaker_ray_rl import Environment, build_experiment, build_metadata, export_model, register_env, run_experiment

ENV_NAME = "cartpole-rlestimator"
DEFAULTS = {
    "rl.training.config.lr": 0.0001,
    "rl.training.config.train_batch_size_per_learner": 500,
    "rl.training.config.minibatch_size": 100,
    "rl.training.config.num_epochs": 2,
    "stop.training_iteration": 20,
    "num_env_runners": 1,
}


def main():
    register_env(ENV_NAME, lambda env_config: gym.make("CartPole-v1", **env_config))
    environment = Environment.from_environ()
    experiment = build_experiment(DEFAULTS, env=ENV_NAME)
    result = run_experiment(experiment.config, stop=experiment.stop, storage_dir=environment.checkpoint_dir)
    if result.stopped:
        return
    metadata = build_metadata(
        result.checkpoint_dir, algorithm="PPO", env=ENV_NAME, env_config={}, metrics=result.metrics
    )
    export_model(result.checkpoint_dir, environment.model_dir, metadata)
    print(f"rl_cartpole.py exported {environment.model_dir} after {result.metrics['training_iteration']} iterations")


if __name__ == "__main__":
    main()
