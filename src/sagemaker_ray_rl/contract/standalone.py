"""Fill in the training config files that a plain ``docker run IMAGE train`` lacks.

SageMaker (and its SDK's local mode) always writes ``hyperparameters.json``, ``resourceconfig.json``
and ``inputdataconfig.json`` under ``/opt/ml/input/config``. The training toolkit's ``train`` refuses
to start without them, so a user who mounts a directory holding only ``hyperparameters.json`` (or
nothing) would get a FileNotFoundError. This module, run by the image's entrypoint before ``train``,
writes the missing ones for a single-host job on this container's hostname and says so, and makes
the model and output directories SageMaker would have made (the toolkit writes ``output/success``
there). Files that exist are never touched, so inside SageMaker it does nothing.
"""

from __future__ import annotations

import json
import socket
import sys

from sagemaker_ray_rl.contract import names as p
from sagemaker_ray_rl.contract.environment import Environment


def fill_missing_config(environment: Environment, hostname: str | None = None) -> list[str]:
    """Write each missing training config file with single-host defaults; make the model and
    output directories.

    Args:
        environment: the container's contract (only its base dir is used).
        hostname: the host name for ``resourceconfig.json``; this machine's when None.

    Returns:
        The names of the files written.
    """
    host = hostname or socket.gethostname()
    defaults = {
        p.HYPERPARAMETERS_FILE: {},
        p.RESOURCE_CONFIG_FILE: {"current_host": host, "hosts": [host], "network_interface_name": "eth0"},
        p.INPUT_DATA_CONFIG_FILE: {},
    }
    written = []
    for name, content in defaults.items():
        path = environment.input_config_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content) + "\n")
            written.append(name)
    for directory in (environment.model_dir, environment.output_data_dir, environment.output_dir):
        directory.mkdir(parents=True, exist_ok=True)
    return written


def main() -> None:
    """Command-line entry: fill in what is missing and print one line naming it."""
    environment = Environment.from_environ()
    written = fill_missing_config(environment)
    if written:
        print(
            f"Not running in SageMaker: wrote single-host defaults for {', '.join(written)} "
            f"in {environment.input_config_dir}",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
