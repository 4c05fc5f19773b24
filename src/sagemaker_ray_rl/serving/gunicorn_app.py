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
SIGTERM makes gunicorn finish in-flight requests first; keep-alive connections that wait for their
next request are closed at once (`StoppingGeventWorker`).

Slow requests (`BoundedRequests`): gunicorn's ``timeout`` does not bound a request on a gevent
worker (the worker's heartbeat runs in its own greenlet while the request's greenlet waits), so each
request gets a ``gevent.Timeout`` of ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` seconds around its handling:
reading the body (a client that sends it slowly), waiting for its batch and the worker's other
greenlets. It is answered 408 (the body had not all arrived) or 504 (it had) with a JSON body, and
its connection is closed. What it bounds is cooperative waiting: a timeout fires only when the
request's greenlet would switch, so a CPU-bound forward pass cannot be interrupted (one that holds
the worker past ``timeout`` stops its heartbeat, and gunicorn's master kills and replaces the
worker); writing the answer to a client that does not read it is not bounded either. Other
connections of the worker are served meanwhile (greenlets), so ``/ping`` keeps answering.

Killed workers: gunicorn's master forks a replacement from the preloaded app (milliseconds); only
the killed worker's own connections fail. Each worker raises its own ``oom_score_adj`` by
`WORKER_OOM_SCORE_ADJ_RAISE` after the fork (`prefer_workers_for_oom_killer`), so that under
memory pressure the kernel's OOM killer picks a worker, which the master replaces, rather than the
master, whose death ends the server (and the container).

gunicorn's control socket (a Unix socket in ``$HOME/.gunicorn`` or ``$XDG_RUNTIME_DIR`` through
which ``gunicornc`` can resize, reload and stop the server, on by default since gunicorn 25.1) is
off: nothing in the image uses it, and it is one more way into the server process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gevent
import gevent.local
from gunicorn.app.base import BaseApplication
from gunicorn.workers.ggevent import GeventWorker

from sagemaker_ray_rl.contract import names
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
#: Added to a worker's ``oom_score_adj`` (-1000 to 1000, capped at 1000) after the fork, so the
#: kernel's OOM killer prefers workers to the master (``proc(5)``: a process may raise its own).
WORKER_OOM_SCORE_ADJ_RAISE = 500

#: The gunicorn request each greenlet is handling (set by `remember_request`), so that
#: `BoundedRequests` can close the connection of a request it times out.
_handling = gevent.local.local()


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


def remember_request(worker: Any, req: Any) -> None:
    """gunicorn's ``pre_request`` hook: note the request this greenlet handles (`BoundedRequests`
    closes its connection when it times out)."""
    _handling.request = req


def exit_without_native_teardown(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook, run in a worker that is leaving (SIGTERM, recycling after
    ``max_requests``): flush the logs and end the process with its exit status now, skipping the
    interpreter's teardown of native libraries.

    Why: a worker forked from a master that imported ONNX Runtime (the preloaded app does, for a
    model with ``onnx/``) hangs in that teardown: ONNX Runtime's static destructors wait on the
    master's threads, which a forked child does not have (onnxruntime 1.32; upstream
    microsoft/onnxruntime pull request 31961). Such a worker then stopped only when gunicorn killed
    it, `GRACEFUL_TIMEOUT_S` after SIGTERM (``docker stop``'s 10 s grace ran out first: exit 137),
    and a worker recycled after ``max_requests`` held its slot until its heartbeat ``timeout``.

    The status is that of the `SystemExit` gunicorn raises for the worker (this hook runs in the
    ``finally`` of gunicorn's ``spawn_worker``, where `sys.exc_info` holds it): 0 for a normal
    exit, gunicorn's boot-error codes kept. With no `SystemExit` in flight (not gunicorn's path),
    the hook does nothing. Python's own ``atexit`` handlers of the worker (logging, Ray's
    ``shutdown`` of a Ray it never started) have nothing left to do once the logs are flushed.
    """
    exc = sys.exc_info()[1]
    if not isinstance(exc, SystemExit) or not (exc.code is None or isinstance(exc.code, int)):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit((exc.code or 0) & 0xFF)


def prefer_workers_for_oom_killer(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` hook, run in the new worker: raise the worker's own
    ``/proc/self/oom_score_adj`` by `WORKER_OOM_SCORE_ADJ_RAISE` (at most 1000), leaving the
    master's as it was. Where the file cannot be written (not Linux, a read-only /proc) the
    worker logs a warning and serves anyway."""
    path = Path("/proc/self/oom_score_adj")
    try:
        current = int(path.read_text())
        path.write_text(str(min(1000, current + WORKER_OOM_SCORE_ADJ_RAISE)))
    except (OSError, ValueError) as exc:
        worker.log.warning("cannot raise the worker's oom_score_adj: %s", exc)


class _InputStream:
    """``wsgi.input`` that notes when the body has been read to its end (``read`` returned b"")."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if not data or size is None or size < 0:
            self.ended = True
        return data

    def __getattr__(self, name: str) -> Any:  # readline, readlines, __iter__ of gunicorn's Body
        return getattr(self._stream, name)


class BoundedRequests:
    """WSGI middleware: each request is answered within `timeout_s` seconds of cooperative waiting,
    or with a JSON 408/504 and its connection closed.

    A ``gevent.Timeout`` runs around the wrapped app's call (the body is read inside it). When it
    fires: 408 ``RequestTimeout`` if the body had not been read to its end (the client sends it too
    slowly), else 504 ``GatewayTimeout`` (the request waited too long for the worker); both name
    ``SAGEMAKER_MODEL_SERVER_TIMEOUT``. It fires only at the request greenlet's next switch (a socket
    read, a wait for its batch), never inside a CPU-bound forward pass (module docstring).

    Args:
        app: the WSGI app (the flask app of `flask_app` or `multi_model`).
        timeout_s: seconds (``ServingSettings.timeout_s``, > 0).
    """

    def __init__(self, app: Callable, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        stream = _InputStream(environ["wsgi.input"])
        environ["wsgi.input"] = stream
        timer = gevent.Timeout(self.timeout_s)
        timer.start()
        try:
            return self.app(environ, start_response)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            request = getattr(_handling, "request", None)
            if request is not None:  # gunicorn answers "Connection: close" and closes after the answer
                request.must_close = True
            status, error = (
                ("504 Gateway Timeout", "GatewayTimeout") if stream.ended else ("408 Request Timeout", "RequestTimeout")
            )
            what = "answered" if stream.ended else "received whole"
            body = json.dumps(
                {
                    "error": error,
                    "message": f"the request was not {what} within {names.MODEL_SERVER_TIMEOUT_ENV}={self.timeout_s:g} s",
                }
            ).encode()
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                sys.exc_info(),
            )
            return [body]
        finally:
            timer.close()


class StoppingGeventWorker(GeventWorker):
    """gunicorn's gevent worker, except that once it stops (SIGTERM, or recycling after
    ``max_requests``) it closes the keep-alive connections that wait for their next request.

    Why not gunicorn's worker as it is: a stopping gevent worker waits until its greenlet pool is
    empty or ``graceful_timeout`` has passed (``gunicorn/workers/ggevent.py``, ``run``), and a
    keep-alive connection between two requests holds its greenlet for up to ``keepalive`` seconds
    (`KEEPALIVE_S`, above `GRACEFUL_TIMEOUT_S`). SageMaker's front end keeps its connections to the
    container open, so every stop took the whole `GRACEFUL_TIMEOUT_S` and a recycled worker held
    its slot as long. gunicorn has no setting for this; closing idle connections at shutdown is what
    nginx and uvicorn do.

    A connection counts as waiting from its accept, or the end of its last answer, until its next
    request has been parsed (`handle_request`); one with bytes already readable is left to be read
    and answered (gunicorn then answers ``Connection: close``). Requests in flight are finished as
    before. The race every keep-alive server has remains: a client that sends a request as its idle
    connection is closed sees the connection close and must retry on a new one, as HTTP/1.1 allows
    for idempotent requests (RFC 9112, section 9.3.1).
    """

    def init_process(self) -> None:
        self._waiting: dict[Any, socket.socket] = {}  # greenlet -> its connection, between requests
        super().init_process()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        greenlet = gevent.getcurrent()
        self._waiting[greenlet] = client
        try:
            super().handle(listener, client, addr)
        finally:
            self._waiting.pop(greenlet, None)

    def handle_request(self, listener_name: Any, req: Any, sock: socket.socket, addr: Any) -> Any:
        greenlet = gevent.getcurrent()
        self._waiting.pop(greenlet, None)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            self._waiting[greenlet] = sock
            if not self.alive:  # recycling: this was the request that reached max_requests
                self.close_waiting_connections()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        gevent.spawn(self.close_waiting_connections)  # out of the signal handler, as gunicorn's handle_quit

    def close_waiting_connections(self) -> None:
        """Shut down every connection that waits for a request and has no bytes to read: its
        greenlet's read returns end-of-file and gunicorn closes it as a client's hang-up."""
        for sock in list(self._waiting.values()):
            with contextlib.suppress(OSError, ValueError):  # already closed by its greenlet
                if not select.select([sock], [], [], 0)[0]:
                    sock.shutdown(socket.SHUT_RDWR)


class GunicornServer(BaseApplication):
    """gunicorn running an already-built WSGI app with options from a dict (gunicorn's documented
    "custom application" pattern). Every request of `app` is bounded by ``options["timeout"]``
    seconds (`BoundedRequests`)."""

    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self._app = BoundedRequests(app, options["timeout"])
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def gunicorn_options(environment: Environment) -> dict[str, Any]:
    """gunicorn settings from the serving contract (gunicorn's own names, `GunicornServer` sets them).

    Workers are recycled after ``serving.max_requests`` requests plus up to 10% jitter
    (`MAX_REQUESTS_JITTER_FRACTION`): the request that reaches the limit is answered with
    ``Connection: close``, the worker finishes its other in-flight requests and exits, its idle
    keep-alive connections close (`StoppingGeventWorker`; clients reconnect), and the master forks a new worker from the
    preloaded app, which takes milliseconds. ``timeout`` is also each request's bound
    (`BoundedRequests`); workers raise their ``oom_score_adj`` (`prefer_workers_for_oom_killer`)
    and leave without the native libraries' teardown (`exit_without_native_teardown`).
    The control socket is off.
    """
    serving = environment.serving
    return {
        "bind": f"0.0.0.0:{serving.port}",
        "workers": serving.workers,
        "worker_class": StoppingGeventWorker,
        "worker_connections": WORKER_CONNECTIONS,
        "keepalive": KEEPALIVE_S,
        "pre_request": remember_request,
        "post_request": take_turns,
        "post_fork": prefer_workers_for_oom_killer,
        "worker_exit": exit_without_native_teardown,
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
