"""A user entry point (``sagemaker_program``), run with the training toolkit's own functions.

The master runs the script exactly as the toolkit would without us (hyperparameters as
command-line arguments, ``SM_*`` variables, ``requirements.txt``); worker hosts only install its
source dir, so the modules it imports load in their env runners.
"""

from __future__ import annotations


def install_user_code() -> None:
    """On a worker host: put the user's source dir (``sagemaker_submit_directory``) in the code dir
    and install its ``requirements.txt``, with the training toolkit's own functions, as
    `run_user_entry_point` does on the master, without running the script.

    Why: the script runs on the master only, but Ray runs its env runners (and learners) on every
    host and imports the script's modules there (a custom env, an RLModule class). Ray adds the
    driver's script directory to every worker's ``sys.path``; the code dir is the same path on each
    host, so after this those imports work on worker hosts too.
    """
    from sagemaker_training import entry_point, files
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    files.download_and_extract(uri=env.module_dir, path=toolkit_environment.code_dir)
    entry_point.install(env.user_entry_point, toolkit_environment.code_dir, capture_error=True)


def run_user_entry_point() -> None:
    """Run ``sagemaker_program`` the way the training toolkit does without a framework module."""
    from sagemaker_training import entry_point
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars())
