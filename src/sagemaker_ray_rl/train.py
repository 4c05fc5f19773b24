"""The ``train`` command: ``SAGEMAKER_TRAINING_MODULE=sagemaker_ray_rl.train:main``.

The training toolkit's ``train`` command (what SageMaker and ``docker run IMAGE train`` run) imports
this module and calls `main`. Every host of the job runs it; the cluster launcher
(`sagemaker_ray_rl.cluster`) makes one Ray cluster of them before any training code runs:

- worker hosts join the master's Ray head and block until the master says the job is over; they
  never run training or user code, but with a user entry point they fetch and install its source
  dir as the master does (`install_user_code`), so the modules it imports load in their env runners;
- the master runs either a user entry point (``sagemaker_program`` / ``SAGEMAKER_PROGRAM``), through
  the toolkit's own `sagemaker_training.entry_point.run` as it would without us
  (hyperparameters other than the image's own as command-line arguments, ``SM_*`` variables,
  ``requirements.txt``), its error in the failure file (`training.user_script`); on several hosts
  with ``RAY_ADDRESS`` set, on one host with no Ray started (the script's own ``ray.init(num_cpus=...)``
  starts it, as on any machine); or the built-in experiment: hyperparameters -> checked spec -> RLlib config
  (all before Ray starts) -> Tune -> export to the model dir, or, with hyperparameter
  ``mode=collect|offline``, a batch-RL job (`sagemaker_ray_rl.offline.runner`).

Failures write the failure file (``/opt/ml/output/failure``) with a one-paragraph reason and raise
`sagemaker_training.errors.ClientError`, which makes the toolkit exit 1 without overwriting it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import SageMakerRayRLError
from sagemaker_ray_rl.contract.failure import write_failure
from sagemaker_ray_rl.offline.settings import OfflineSettings

if TYPE_CHECKING:
    from sagemaker_ray_rl.cluster import ClusterSettings


def main() -> None:
    """Run this host's part of the job described by the container's contract; see the module
    docstring.

    Raises:
        sagemaker_training.errors.ClientError: the job failed for a reason the user can fix (the
            failure file says which).
        Exception: anything unexpected, after the failure file names it.
    """
    from sagemaker_training.errors import ClientError

    contract = Environment.from_environ()
    user_code = False
    try:
        settings = _cluster_settings(contract)
        if not contract.resource_config.is_master:
            # Workers do not check the experiment's hyperparameters: the master does, before its head
            # starts, and SageMaker (or local mode's docker compose) ends every host when one fails.
            from sagemaker_ray_rl.cluster.launcher import run_worker

            if contract.user_entry_point:
                from sagemaker_ray_rl.training.user_script import install_user_code

                install_user_code()
            run_worker(contract, settings)
            return
        offline = None if contract.user_entry_point else OfflineSettings.from_hyperparameters(contract.hyperparameters)
        if offline is not None:
            from sagemaker_ray_rl.offline.runner import check_before_ray

            check_before_ray(contract, offline)
        plan = None
        if not contract.user_entry_point and offline is None:
            from sagemaker_ray_rl.training.builtin import prepare

            plan = prepare(contract)
        user_code = plan is None and offline is None
        if user_code and len(contract.resource_config.hosts) == 1:
            # One host: Ray is left to the script, whose own ray.init(...) starts it here as on any
            # machine, num_cpus= and num_gpus= included (Ray refuses those when joining a running
            # cluster); run_experiment starts it when the script did not.
            from sagemaker_ray_rl.training.user_script import LOCAL_RAY_ADDRESS, run_user_entry_point

            run_user_entry_point(contract, ray_address=LOCAL_RAY_ADDRESS)
            return

        from sagemaker_ray_rl.cluster import ray_cluster

        with ray_cluster(contract, settings) as cluster:
            if user_code:
                from sagemaker_ray_rl.training.user_script import run_user_entry_point

                run_user_entry_point(contract)
            elif offline is not None:  # mode=collect|offline: sagemaker_ray_rl.offline
                from sagemaker_ray_rl.offline import runner as offline_runner

                offline_runner.run(contract, offline)
            else:
                from sagemaker_ray_rl.training.builtin import train

                train(contract, plan, cluster)
    except SageMakerRayRLError as exc:
        write_failure(contract, f"{type(exc).__name__}: {exc}")
        raise ClientError(str(exc)) from exc
    except Exception as exc:
        if user_code:  # the toolkit reports the user's own errors, failure file included
            raise
        write_failure(
            contract,
            f"Unexpected {type(exc).__name__} in sagemaker_ray_rl training: {exc}. The job log holds the traceback.",
        )
        if isinstance(exc, OSError) and not isinstance(exc.errno, int):
            # The toolkit exits with an OSError's errno, and with 0 when that is None (int(None)
            # raises inside its handler and its `finally` exits with the success code): a failed job
            # would look successful. Any other exception exits 1.
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


def _cluster_settings(contract: Environment) -> ClusterSettings:
    from sagemaker_ray_rl.cluster import ClusterSettings

    return ClusterSettings.from_hyperparameters(contract.hyperparameters, contract.resource_config)
