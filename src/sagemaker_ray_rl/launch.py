"""``python -m sagemaker_ray_rl.launch [--] COMMAND [ARG...]``: the job's Ray cluster around any command.

For drivers that do not go through ``train``: the SageMaker SDK v3 ``ModelTrainer`` with
``source_code`` replaces the image's entrypoint with its own driver script, and some users start
their own script with ``docker run IMAGE python my_train.py``. Put this launcher in front of the
command and every host of the job forms one Ray cluster (`sagemaker_ray_rl.cluster`) exactly as for
``train``; the command runs on the master host only, with ``RAY_ADDRESS`` set, so a plain
``ray.init()`` in it joins the cluster. Worker hosts join and block; they never run the command.

Exit status: the command's own on the master (0 on workers whose master finished); 1 with the
failure file when the cluster cannot be formed or is lost; 2 for a usage error. SIGTERM is passed on
to the command.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from sagemaker_ray_rl.cluster.launcher import ray_cluster
from sagemaker_ray_rl.cluster.settings import ClusterSettings
from sagemaker_ray_rl.contract import names
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import SageMakerRayRLError
from sagemaker_ray_rl.contract.failure import write_failure
from sagemaker_ray_rl.contract.standalone import fill_missing_config

USAGE = "usage: python -m sagemaker_ray_rl.launch [--] COMMAND [ARG...]"
#: Seconds the command gets to stop after SIGTERM before it is killed (SageMaker allows 120 in all;
#: the built-in experiment and a user entry point get the same).
COMMAND_STOP_TIMEOUT_S = names.STOP_BUDGET_S


def main(argv: list[str] | None = None) -> int:
    """Run `argv` (the command) on the master of the job's Ray cluster; see the module docstring.

    Returns:
        The exit status for this process.
    """
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command or command[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not command else sys.stdout)
        return 2 if not command else 0
    fill_missing_config(Environment.from_environ())
    environment = Environment.from_environ()
    try:
        settings = ClusterSettings.from_hyperparameters(environment.hyperparameters, environment.resource_config)
        with ray_cluster(environment, settings):
            status = run_command(command)
    except SageMakerRayRLError as exc:
        write_failure(environment, f"{type(exc).__name__}: {exc}")
        return 1
    if status != 0:
        write_failure(environment, f"the command `{shlex.join(command)}` exited with status {status}")
    return status


def run_command(command: list[str]) -> int:
    """Run `command` and wait for it; on SystemExit (SIGTERM on the master, see
    `launcher.master_sigterm_exits`) stop it first, then let the exit go on.

    Returns:
        The command's exit status (128 + N when signal N ended it, as a shell reports it).
    """
    process = subprocess.Popen(command)
    try:
        status = process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=COMMAND_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main())
