"""CartPole as seed 000 trains it, on Ray 2.60's new API stack: register the env, write the experiment's
defaults, let the job's hyperparameters override them, stop at 300 iterations or a mean return of 500,
export the checkpoint for serving.

Estimator (image_uri = this image; no framework container, no requirements.txt):

    Estimator(image_uri=IMAGE, entry_point="cartpole.py", source_dir="examples", instance_count=1,
              instance_type="ml.m5.large", hyperparameters={"rl.training.config.lr": 0.0001}, ...)

Run locally: ``docker run -v JOB:/opt/ml -v $PWD/examples:/opt/ml/code:ro IMAGE train``, with
``sagemaker_program=cartpole.py`` and ``sagemaker_submit_directory=/opt/ml/code`` in
``JOB/input/config/hyperparameters.json`` (what the SDK writes), as ``tests/container/test_examples.py`` does.
"""

import gymnasium as gym

from sagemaker_ray_rl import build_experiment, register_env, train_and_export

ENV_NAME = "cartpole-sagemaker"

# Seed 000's experiment in the new stack's names (old names such as num_sgd_iter, sgd_minibatch_size,
# train_batch_size or num_workers are still accepted, with a warning naming the new one).
DEFAULTS = {
    "algorithm": "PPO",
    "rl.training.config.lr": 0.0001,
    "rl.training.config.num_epochs": 30,
    "rl.training.config.minibatch_size": 128,
    "rl.training.config.train_batch_size_per_learner": 4000,
    "rl.training.config.batch_mode": "truncate_episodes",
    "rl.training.stop.training_iteration": 300,
    "rl.training.stop.episode_return_mean": 500,
}


def create_environment(env_config):
    """Make the (custom) env; registered by name so every env runner, on any host, can build it."""
    return gym.make("CartPole-v1", **env_config)


def main():
    register_env(ENV_NAME, create_environment)
    experiment = build_experiment(DEFAULTS, env=ENV_NAME)  # the job's hyperparameters win over DEFAULTS
    # Checkpoints in /opt/ml/checkpoints (synced to checkpoint_s3_uri: a restarted spot job resumes), the
    # best one exported to /opt/ml/model with metadata.json; after SIGTERM only checkpointed.
    train_and_export(experiment)


if __name__ == "__main__":
    main()
