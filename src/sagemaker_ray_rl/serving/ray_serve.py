"""The Ray Serve transport: the same policy as a Ray Serve deployment behind the same ``/ping``,
``/invocations`` and ``/execution-parameters`` on the same port.

For users who want replicas of the policy (``SAGEMAKER_RAY_SERVE_REPLICAS``, default 1) or Ray
Serve's autoscaling and observability. ``serve`` starts it when ``SAGEMAKER_RAY_RL_SERVER=ray-serve``
(or ``serve --server ray-serve``): a local Ray instance (no dashboard), Serve's HTTP proxy on
``SAGEMAKER_BIND_TO_PORT``, and one deployment whose FastAPI ingress answers with the same code as
the gunicorn transport (`protocol.BodyCollector`, `protocol.read_invocation`, `protocol.compute_jobs`,
`protocol.write_invocation`), so bodies, limits, errors and statuses are identical: the body is read as
it streams in and never kept past ``SAGEMAKER_MAX_PAYLOAD_IN_MB``. Concurrent requests are batched into one forward pass
with Ray Serve's ``@serve.batch`` (``SAGEMAKER_RAY_SERVE_MAX_BATCH_SIZE``,
``SAGEMAKER_RAY_SERVE_BATCH_WAIT_TIMEOUT_S``); the answers equal the unbatched ones.

Every error is `protocol`'s JSON body, as under gunicorn, never FastAPI's ``{"detail": ...}`` or
Starlette's plain text: a `RequestError` (`protocol.error_answer`), the router's 404 and 405
(`protocol.http_error_answer`; no redirect of a trailing slash, which gunicorn answers 404) and
an exception in the policy (`protocol.internal_error_answer`: a 500, logged with its traceback,
for that request only, also when batched with others: `protocol.compute_jobs_apart`).

Cost (docs/benchmarks.md): Ray's start makes the cold start several seconds longer, and every
request crosses Serve's proxy and a replica actor; on few cores the gunicorn transport is faster.
The model is loaded once in the driver first, so a missing or broken model exits before Ray starts.
"""

# No `from __future__ import annotations`: FastAPI resolves the handlers' annotations at runtime.
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import ray
import torch
from fastapi import FastAPI, Request, Response
from ray import serve
from starlette.exceptions import HTTPException

from sagemaker_ray_rl.contract.environment import Environment, ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.serving import protocol


def build_app(model_dir: Path, settings: ServingSettings, replicas: int):
    """The Serve application: a deployment of `replicas` replicas, each loading the policy once.

    Each replica parses and validates a request as the gunicorn transport does
    (`protocol.read_invocation`), then hands its forward passes (`protocol.Job`) to a ``@serve.batch``
    method: jobs of concurrent requests that queue while a batch runs (up to
    ``settings.ray_serve_max_batch_size`` per batch, waiting ``ray_serve_batch_wait_timeout_s``
    for more after the first) run as one forward pass per module and options
    (`protocol.compute_jobs`), and each request gets its own rows back. A replica takes up to twice
    the batch size in concurrent requests (``max_ongoing_requests``), so the next batch fills
    while one runs.

    Args:
        model_dir: where the checkpoint is (``/opt/ml/model``).
        settings: payload limit, default Accept, workers (reported by ``/execution-parameters``),
            batch size and wait.
        replicas: ``num_replicas`` of the deployment.
    """
    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    batch_size = settings.ray_serve_max_batch_size

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        """The router's 404 (no route for the path) and 405 (its ``Allow`` header kept)."""
        status, mimetype, content = protocol.http_error_answer(exc.status_code, message=exc.detail)
        return Response(content, status_code=status, media_type=mimetype, headers=exc.headers)

    async def read_body(request: Request) -> bytes:
        """The body as it streams in (``Content-Length`` or chunked), never more than the payload
        limit kept (`protocol.BodyCollector`: over it, the rest is read and dropped, then 413)."""
        length = request.headers.get("content-length")
        collector = protocol.BodyCollector(settings, int(length) if length and length.isdigit() else None)
        async for chunk in request.stream():
            if chunk and not collector.add(chunk):
                return collector.body(complete=False)
        return collector.body(complete=True)

    @serve.deployment(
        num_replicas=replicas, max_ongoing_requests=max(8, 2 * batch_size), ray_actor_options={"num_cpus": 0}
    )
    @serve.ingress(api)
    class PolicyDeployment:
        """One replica: the loaded policy and the shared request code."""

        def __init__(self) -> None:
            torch.set_num_threads(1)
            self.policy = Policy.load(model_dir, engine=settings.inference)
            self.parameters = protocol.execution_parameters(settings)

        @serve.batch(max_batch_size=batch_size, batch_wait_timeout_s=settings.ray_serve_batch_wait_timeout_s)
        async def compute(self, jobs: list) -> list:
            return protocol.compute_jobs_apart(self.policy, jobs)

        @api.get("/ping")
        def ping(self) -> Response:
            return Response(protocol.ping_body(self.policy), media_type="application/json")

        @api.get("/execution-parameters")
        def execution_parameters(self) -> Response:
            return Response(self.parameters, media_type="application/json")

        @api.post("/invocations")
        async def invocations(self, request: Request) -> Response:
            try:
                body = await read_body(request)
                accept, decoded, jobs = protocol.read_invocation(self.policy, settings, request.headers, body)
                answers = await asyncio.gather(*(self.compute(job) for job in jobs))
                status, mimetype, content = 200, accept, protocol.write_invocation(accept, decoded, jobs, answers)
            except RequestError as exc:
                status, mimetype, content = protocol.error_answer(exc)
            except Exception as exc:
                logging.getLogger("ray.serve").exception("unexpected error answering POST /invocations")
                status, mimetype, content = protocol.internal_error_answer(exc)
            return Response(content, status_code=status, media_type=mimetype)

    return PolicyDeployment.bind()


def run(environment: Environment) -> None:
    """Start Ray, Serve's proxy on the serving port and the deployment; block until SIGTERM/SIGINT,
    then shut Serve down (in-flight requests finish: Serve drains replicas on shutdown)."""
    serving = environment.serving
    ray.init(address="local", include_dashboard=False, log_to_driver=True, num_cpus=environment.num_cpus)
    # After ray.init: Ray core installs a fatal-signal handler that aborts on SIGTERM; ours replaces it.
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    serve.start(http_options={"host": "0.0.0.0", "port": serving.port})
    serve.run(build_app(environment.model_dir, serving, serving.ray_serve_replicas), name="policy", route_prefix="/")
    print(
        f"serve: Ray Serve deployment with {serving.ray_serve_replicas} replica(s) on port {serving.port}",
        file=sys.stderr,
        flush=True,
    )
    while not stopping:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()
