"""The flask app under gunicorn: one ``gevent`` worker process per CPU, the policy loaded once.

The policy is loaded in gunicorn's master before the workers fork (``preload_app``), so the RLlib
import and the checkpoint load are paid once. Each worker is a ``gevent`` process: keep-alive
connections (SageMaker's front end and batch transform reuse them) served by greenlets, without
the thread pool hand-off of ``gthread`` workers (more requests/s at every concurrency, less CPU
per request: docs/benchmarks.md, serving). gevent
workers are what SageMaker's earlier Python model servers ran (``sagemaker-containers``:
gunicorn ``-k gevent``). Forward passes run on the worker's one thread (one torch thread, set
before the fork): in parallel across workers; within a worker, those of the requests that are
ready together run as one (`batching.GreenBatcher`, set up by ``serve``). After each request the
worker lets its other connections go first (`take_turns`).

gevent requires the standard library to be patched before anything imports ``ssl`` or starts
threads; with ``preload_app`` the app is imported in the master before gunicorn's worker would
patch, so ``serve`` patches first (`server.patch_for_gevent`), before this module is imported.

Settings (see `environment.ServingSettings`): ``SAGEMAKER_BIND_TO_PORT`` (8080),
``SAGEMAKER_MODEL_SERVER_WORKERS`` (CPU count), ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (60 s),
``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (6), ``SAGEMAKER_RAY_RL_MAX_REQUESTS`` (100,000: worker recycling).
SIGTERM makes gunicorn finish in-flight requests first.

gunicorn's control socket (a Unix socket in ``$HOME/.gunicorn`` or ``$XDG_RUNTIME_DIR`` through
which ``gunicornc`` can resize, reload and stop the server, on by default since gunicorn 25.1) is
off: nothing in the image uses it, and it is one more way into the server process.
"""

from __future__ import annotations

from typing import Any

import gevent
from gunicorn.app.base import BaseApplication

from sagemaker_ray_rl.contract.environment import Environment

#: Seconds gunicorn gives workers to finish in-flight requests after SIGTERM (SageMaker sends
#: SIGKILL 30 s after SIGTERM on endpoint updates).
GRACEFUL_TIMEOUT_S = 25
#: Seconds an idle keep-alive connection stays open (above the 60 s idle timeout of the load
#: balancers in front of SageMaker endpoints, so the server is not the side that drops it).
KEEPALIVE_S = 75
#: Open connections per worker (gunicorn's default for async workers).
WORKER_CONNECTIONS = 1000
#: Each worker's recycling point is ``max_requests`` plus a random 0 to this fraction of it, so
#: workers started together do not all restart together.
MAX_REQUESTS_JITTER_FRACTION = 0.1


def take_turns(worker: Any, req: Any, environ: dict, resp: Any) -> None:
    """gunicorn's ``post_request`` hook: wait until gevent's loop has polled the other connections
    and run what is ready, so keep-alive connections are served in turn.

    A greenlet that finds its connection's next request already in the socket buffer reads it
    without yielding (gevent only switches when a read would block); on a busy worker that
    connection is served again and again while requests on the worker's other connections wait
    (a long tail of latency; docs/benchmarks.md has the figures). ``gevent.idle()`` returns once
    the loop has polled and run everything ready, i.e. round robin.
    """
    gevent.idle()


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
    """gunicorn settings from the serving contract (gunicorn's own names, `GunicornServer` sets them).

    Workers are recycled after ``serving.max_requests`` requests plus up to 10% jitter
    (`MAX_REQUESTS_JITTER_FRACTION`): the request that reaches the limit is answered with
    ``Connection: close``, the worker finishes its other in-flight requests and exits, its idle
    keep-alive connections close (clients reconnect), and the master forks a new worker from the
    preloaded app, which takes milliseconds. The control socket is off.
    """
    serving = contract.serving
    return {
        "bind": f"0.0.0.0:{serving.port}",
        "workers": serving.workers,
        "worker_class": "gevent",
        "worker_connections": WORKER_CONNECTIONS,
        "keepalive": KEEPALIVE_S,
        "post_request": take_turns,
        "timeout": serving.timeout_s,
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "preload_app": True,
        "max_requests": serving.max_requests,
        "max_requests_jitter": int(serving.max_requests * MAX_REQUESTS_JITTER_FRACTION),
        "control_socket_disable": True,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "sagemaker-ray-rl-serve",
    }
