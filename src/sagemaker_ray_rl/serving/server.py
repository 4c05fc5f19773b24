"""The ``serve`` command: load the policy once, then run the flask app under gunicorn.

The policy is loaded in gunicorn's master before the workers fork (``preload_app``), so the
RLlib import and the checkpoint load are paid once and a missing or broken model stops ``serve``
at once with a clear message instead of a server that answers 500 forever. Each worker is a
``gthread`` process (4 threads, keep-alive connections: SageMaker's front end and batch transform
reuse connections; measured 2.4x the requests/s of sync workers at concurrency 8 on 2 cores, see
docs/benchmarks.md) using one torch thread (``torch.set_num_threads(1)`` before anything runs:
OpenMP thread pools do not survive ``fork``, and requests run in parallel across workers).

Settings (see `environment.ServingSettings`): ``SAGEMAKER_BIND_TO_PORT`` (8080),
``SAGEMAKER_MODEL_SERVER_WORKERS`` (CPU count), ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (60 s),
``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (6). SIGTERM makes gunicorn finish in-flight requests first.
"""

from __future__ import annotations

import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from sagemaker_ray_rl.environment import Environment
from sagemaker_ray_rl.errors import SageMakerRayRLError

#: Seconds gunicorn gives workers to finish in-flight requests after SIGTERM (SageMaker sends
#: SIGKILL 30 s after SIGTERM on endpoint updates).
GRACEFUL_TIMEOUT_S = 25
#: Seconds an idle keep-alive connection stays open (above the 60 s idle timeout of the load
#: balancers in front of SageMaker endpoints, so the server is not the side that drops it).
KEEPALIVE_S = 75


class GunicornServer(BaseApplication):
    """gunicorn running an already-built WSGI app with options from a dict (gunicorn's documented
    "custom application" pattern)."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def gunicorn_options(contract: Environment) -> dict[str, Any]:
    """gunicorn settings from the serving contract."""
    serving = contract.serving
    return {
        "bind": f"0.0.0.0:{serving.port}",
        "workers": serving.workers,
        "worker_class": "gthread",
        "threads": 4,
        "keepalive": KEEPALIVE_S,
        "timeout": serving.timeout_s,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "preload_app": True,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "sagemaker-ray-rl-serve",
    }


def main(argv: list[str] | None = None) -> None:
    """Load the model from the model dir and serve it; exit 1 with a message when it cannot.

    ``serve [--backend gunicorn|ray-serve]``: the argument overrides ``SAGEMAKER_RAY_RL_SERVER``.
    """
    import argparse
    import os

    import torch

    parser = argparse.ArgumentParser(prog="serve", description="Serve the RLlib checkpoint in the model dir.")
    parser.add_argument("--backend", choices=("gunicorn", "ray-serve"), help="model server (default: $SAGEMAKER_RAY_RL_SERVER or gunicorn)")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["SAGEMAKER_RAY_RL_SERVER"] = args.backend

    torch.set_num_threads(1)
    from sagemaker_ray_rl.connectors import connector_names
    from sagemaker_ray_rl.policy import Policy
    from sagemaker_ray_rl.serving.app import create_app

    try:
        contract = Environment.from_environ()
        policy = Policy.load(contract.model_dir)
    except SageMakerRayRLError as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    for module_id, pipeline in policy.pipelines.items():
        print(
            f"serve: module {module_id!r} from {policy.checkpoint_dir}: observations {pipeline.observation_space}, "
            f"actions {pipeline.action_space}, connectors {connector_names(pipeline.env_to_module)} -> "
            f"{connector_names(pipeline.module_to_env)} ({'batched' if pipeline.batched else 'per-episode'} path)",
            file=sys.stderr,
            flush=True,
        )
    if contract.serving.backend == "ray-serve":
        from sagemaker_ray_rl.serving import ray_serve

        ray_serve.run(contract)
        return
    print(f"serve: gunicorn on port {contract.serving.port}, {contract.serving.workers} worker(s)", file=sys.stderr, flush=True)
    GunicornServer(create_app(policy, contract.serving), gunicorn_options(contract)).run()


if __name__ == "__main__":
    main()
