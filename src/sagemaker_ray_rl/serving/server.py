"""The ``serve`` command: load the policy once, then serve it with the chosen server (gunicorn or Ray Serve).

``gunicorn`` (default): the flask app under gunicorn's gevent workers (`gunicorn_app`);
``ray-serve``: a Ray Serve deployment behind the same routes (`ray_serve`). A missing or broken
model stops ``serve`` at once with a clear message instead of a server that answers 500 forever.

Module level holds only the standard library and the contract: whatever may load torch, Ray or
gunicorn is imported in `main`, after `patch_for_gevent` (docs/architecture.md, "Function-level
imports").
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
from pathlib import Path

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import SageMakerRayRLError


def patch_for_gevent() -> None:
    """Patch the standard library for gunicorn's gevent workers (sockets, threading, ssl, ...).

    Called before torch, Ray or gunicorn are imported: the app is preloaded in gunicorn's master,
    and patching after those imports (which gunicorn's worker would otherwise do after the fork)
    leaves modules that imported ``ssl`` names directly unpatched and makes interpreter exit log
    errors from unpatched locks (gevent issue 1016, gunicorn issue 1566).
    """
    from gevent import monkey  # noqa: PLC0415  (the gunicorn server only; Ray Serve never loads gevent)

    monkey.patch_all()


def main(argv: list[str] | None = None) -> None:
    """Load the model from the model dir and serve it; exit 1 with a message when it cannot.

    ``serve [--server gunicorn|ray-serve]``: the argument overrides ``SAGEMAKER_RAY_RL_SERVER``.
    """
    parser = argparse.ArgumentParser(prog="serve", description="Serve the RLlib checkpoint in the model dir.")
    parser.add_argument(
        "--server",
        "--backend",  # its earlier name, kept for scripts that use it
        dest="server",
        choices=("gunicorn", "ray-serve"),
        help="model server (default: $SAGEMAKER_RAY_RL_SERVER or gunicorn)",
    )
    args = parser.parse_args(argv)
    if args.server:
        os.environ["SAGEMAKER_RAY_RL_SERVER"] = args.server

    try:
        environment = Environment.from_environ()
    except SageMakerRayRLError as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    if environment.serving.server == "gunicorn":
        patch_for_gevent()  # before torch, Ray and gunicorn are imported

    import torch  # noqa: PLC0415  (after patch_for_gevent, as every import below)

    # One torch thread, before anything runs: OpenMP thread pools do not survive gunicorn's fork,
    # and requests run in parallel across workers (Ray Serve: across replicas).
    torch.set_num_threads(1)
    from sagemaker_ray_rl.inference.pipelines import connector_names  # noqa: PLC0415
    from sagemaker_ray_rl.inference.policy import Policy  # noqa: PLC0415

    if environment.serving.multi_model:
        serve_multi_model(environment)
        return
    try:
        policy = Policy.load(environment.model_dir, engine=environment.serving.inference)
    except SageMakerRayRLError as exc:
        print(f"serve: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    for module_id, pipeline in policy.pipelines.items():
        print(
            f"serve: module {module_id!r} from {policy.checkpoint_dir}: observations {pipeline.observation_space}, "
            f"actions {pipeline.action_space}, connectors {connector_names(pipeline.env_to_module)} -> "
            f"{connector_names(pipeline.module_to_env)} ({'batched' if pipeline.batched else 'per-episode'} path), "
            f"greedy answers from {policy.engines[module_id]}",
            file=sys.stderr,
            flush=True,
        )
    if environment.serving.server == "ray-serve":
        from sagemaker_ray_rl.serving import ray_serve  # noqa: PLC0415

        ray_serve.run(environment)
        return
    from sagemaker_ray_rl.serving.batching import GreenBatcher  # noqa: PLC0415
    from sagemaker_ray_rl.serving.flask_app import create_app  # noqa: PLC0415
    from sagemaker_ray_rl.serving.gunicorn_app import GunicornServer, gunicorn_options  # noqa: PLC0415
    from sagemaker_ray_rl.serving.protocol import compute_jobs  # noqa: PLC0415

    serving = environment.serving
    batcher = (
        GreenBatcher(functools.partial(compute_jobs, policy), serving.max_batch_size)
        if serving.max_batch_size > 1
        else None
    )
    app = create_app(policy, serving, compute=batcher)
    print(
        f"serve: gunicorn on port {serving.port}, {serving.workers} gevent worker(s), "
        f"up to {serving.max_batch_size} request(s) per forward pass",
        file=sys.stderr,
        flush=True,
    )
    # The preloaded objects (RLlib, torch, the policy: ~330,000 tracked) leave the collector's generations:
    # full collections stop scanning them (they had made the p99 latency: docs/benchmarks.md)
    # and stop writing to their pages in the forked workers (Python's gc.freeze docs).
    gc.freeze()
    GunicornServer(app, gunicorn_options(environment)).run()


def serve_multi_model(environment: Environment) -> None:
    """``SAGEMAKER_MULTI_MODEL=true``: no model at start; the ``/models`` routes of
    `multi_model` under the same gunicorn setup, the registry's state in a directory the workers
    share (created here, before the fork), loads in gevent's thread pool, and one batcher per
    loaded model in each worker."""
    import gevent  # noqa: PLC0415  (after patch_for_gevent, as every import below)

    from sagemaker_ray_rl.serving import multi_model  # noqa: PLC0415
    from sagemaker_ray_rl.serving.batching import GreenBatcher  # noqa: PLC0415
    from sagemaker_ray_rl.serving.gunicorn_app import GunicornServer, gunicorn_options  # noqa: PLC0415
    from sagemaker_ray_rl.serving.protocol import compute_jobs  # noqa: PLC0415

    serving = environment.serving
    if serving.server != "gunicorn":
        print("serve: cannot start: multi-model endpoints are served by the gunicorn transport", file=sys.stderr)
        sys.exit(1)
    budget = (
        int(serving.mme_memory_mb * 2**20) if serving.mme_memory_mb is not None else multi_model.default_budget_bytes()
    )

    def run_blocking(fn, *args):  # in the worker: a real thread, the event loop keeps serving
        return gevent.get_hub().threadpool.apply(fn, args)

    def compute_factory(policy):
        if serving.max_batch_size <= 1:
            return None
        return GreenBatcher(functools.partial(compute_jobs, policy), serving.max_batch_size)

    registry = multi_model.ModelRegistry(
        Path(tempfile.mkdtemp(prefix="smrl-mme-")),
        serving,
        budget_bytes=budget,
        workers=serving.workers,
        run_blocking=run_blocking,
        compute_factory=compute_factory,
    )
    print(
        f"serve: multi-model endpoint, gunicorn on port {serving.port}, {serving.workers} gevent worker(s), "
        f"memory budget {budget / 2**20:.0f} MB",
        file=sys.stderr,
        flush=True,
    )
    gc.freeze()
    GunicornServer(multi_model.create_app(registry, serving), gunicorn_options(environment)).run()


if __name__ == "__main__":
    main()
