"""The flask transport (run by gunicorn): ``GET /ping``, ``POST /invocations`` and
``GET /execution-parameters`` as routes over `protocol`.

``POST /invocations`` is answered by `InvocationsFront`, a WSGI layer in front of flask's
dispatch (``app.wsgi_app``, flask's documented place for middleware): the request path calls
`protocol` straight from the WSGI environ, without flask's request and app contexts, URL
matching and response objects (most of a one-observation request's time in this process:
docs/benchmarks.md, serving). Every other route and method (``GET /invocations`` is a 405,
``OPTIONS`` lists the methods) stays flask's.

The body is read from the WSGI stream by `protocol.read_body`, with ``Content-Length`` or chunked,
never holding more than ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (a larger one is a 413 the client can read,
never a body cut at the limit). Every error leaves as JSON, its body built by `protocol` (as the
Ray Serve transport's): `RequestError` with its own status, werkzeug's HTTP errors (404, 405) with
theirs. An unexpected exception (e.g. the policy's own) is a 500 with a JSON body and a logged
traceback; the worker keeps serving. User input is validated before it reaches the policy
(`observations`), so it never gets that far for a module without bugs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.utils import get_content_type
from werkzeug.wsgi import get_content_length, get_input_stream

from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.serving import codecs
from sagemaker_ray_rl.serving.protocol import (
    Job,
    answer_invocation,
    error_answer,
    execution_parameters,
    http_error_answer,
    internal_error_answer,
    ping_body,
    read_body,
)

logger = logging.getLogger(__name__)


def create_app(
    policy: Policy, settings: ServingSettings, compute: Callable[[list[Job]], list[Any]] | None = None
) -> Flask:
    """A flask app answering for `policy`.

    Args:
        policy: the loaded policy (loaded before the app exists, so ``/ping`` is 200 from the start).
        settings: payload limit, default Accept, worker count (for ``/execution-parameters``).
        compute: runs a request's jobs (`compute_jobs`' contract), e.g. a `batching.GreenBatcher`
            that shares forward passes between concurrent requests; default `compute_jobs`.
    """
    app = Flask("sagemaker_ray_rl")
    parameters_body = execution_parameters(settings)
    ping_answer = ping_body(policy)

    @app.get("/ping")
    def ping() -> Response:
        return Response(ping_answer, status=200, mimetype=codecs.JSON)

    @app.get("/execution-parameters")
    def parameters() -> Response:
        return Response(parameters_body, status=200, mimetype=codecs.JSON)

    @app.post("/invocations")
    def invocations() -> Response:  # the route for flask's 405/OPTIONS; POSTs are answered by the front
        body = request_body(settings)
        status, mimetype, body = answer_invocation(policy, settings, request.headers, body, compute)
        return Response(body, status=status, mimetype=mimetype)

    add_json_errors(app)
    app.wsgi_app = InvocationsFront(app.wsgi_app, policy, settings, compute)  # type: ignore[method-assign]
    return app


class InvocationsFront:
    """WSGI middleware answering ``POST /invocations`` itself and passing every other request to
    flask (`wsgi_app`).

    The answer is what flask's route gives, byte for byte: the body read by `protocol.read_body`
    (``Content-Length`` or chunked, a 413 past the payload limit), `protocol.answer_invocation`'s
    status and body, werkzeug's status line (``"413 REQUEST ENTITY TOO LARGE"``) and
    ``Content-Type`` (``text/csv; charset=utf-8``), a ``Content-Length``; an unexpected exception
    is logged with its traceback and answered as `add_json_errors` answers it (500, JSON).

    Args:
        wsgi_app: flask's ``app.wsgi_app``.
        policy, settings, compute: as for `create_app`.
    """

    def __init__(
        self,
        wsgi_app: Callable[..., Any],
        policy: Policy,
        settings: ServingSettings,
        compute: Callable[[list[Job]], list[Any]] | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.policy = policy
        self.settings = settings
        self.compute = compute

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/invocations" or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        try:
            stream = get_input_stream(environ, max_content_length=None)
            body = read_body(stream.read, get_content_length(environ), self.settings)
            status, mimetype, body = answer_invocation(
                self.policy, self.settings, EnvironHeaders(environ), body, self.compute
            )
        except RequestError as exc:
            status, mimetype, body = error_answer(exc)
        except Exception as exc:
            logger.exception(
                "unexpected error answering %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            )
            status, mimetype, body = internal_error_answer(exc)
        start_response(
            _status_line(status), [("Content-Type", _content_type(mimetype)), ("Content-Length", str(len(body)))]
        )
        return [body]


@functools.cache
def _status_line(status: int) -> str:
    """werkzeug's status line for `status` (``"200 OK"``)."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


@functools.cache
def _content_type(mimetype: str) -> str:
    """werkzeug's ``Content-Type`` for `mimetype` (``charset=utf-8`` added to ``text/*``)."""
    return get_content_type(mimetype, "utf-8")


def add_json_errors(app: Flask) -> None:
    """Every error of `app` answered as JSON, the bodies `protocol`'s: a `RequestError` with its own
    4xx and body (`protocol.error_answer`), werkzeug's HTTP errors (404, 405, ...) with theirs
    (`protocol.http_error_answer`), anything else a 500 naming the exception
    (`protocol.internal_error_answer`, logged with its traceback; the worker keeps serving). Shared
    by the single-model and multi-model apps."""

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        return _response(error_answer(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _response(http_error_answer(exc.code or 500, exc.name.replace(" ", ""), exc.description))

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        logger.exception("unexpected error answering %s %s", request.method, request.path)
        return _response(internal_error_answer(exc))


def request_body(settings: ServingSettings) -> bytes:
    """The body of the flask request being handled, read with `protocol.read_body`: whole up to
    ``settings.max_payload_bytes``, with ``Content-Length`` or chunked.

    Use it instead of ``request.get_data()`` with werkzeug's ``MAX_CONTENT_LENGTH``, which cuts a
    chunked body at the limit without an error (werkzeug 3.1 reads a chunked stream up to the
    maximum and stops).

    Raises:
        RequestError: 413 over the limit (after the rest of the body was read and dropped).
    """
    # The raw stream (werkzeug's with no maximum: gunicorn ends it at the body's end, chunked or
    # not; without Content-Length on a server that does not, it is empty).
    stream = get_input_stream(request.environ, max_content_length=None)
    return read_body(stream.read, request.content_length, settings)


def _response(answer: tuple[int, str, bytes]) -> Response:
    status, mimetype, body = answer
    return Response(body, status=status, mimetype=mimetype)
