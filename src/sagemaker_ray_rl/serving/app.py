"""The flask app: ``GET /ping`` and ``POST /invocations`` (SageMaker hosting and batch transform).

Every error leaves as JSON: `RequestError` with its own status, werkzeug's HTTP errors (404, 405,
413 for a body over ``SAGEMAKER_MAX_PAYLOAD_IN_MB``) with theirs. An unexpected exception in the
policy is a 500 with a JSON body; the worker keeps serving.
"""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sagemaker_ray_rl.environment import ServingSettings
from sagemaker_ray_rl.errors import RequestError
from sagemaker_ray_rl.policy import Policy
from sagemaker_ray_rl.serving import codecs

logger = logging.getLogger(__name__)

_PING_BODY = b'{"status": "healthy"}'


def create_app(policy: Policy, settings: ServingSettings) -> Flask:
    """A flask app answering for `policy`.

    Args:
        policy: the loaded policy (loaded before the app exists, so ``/ping`` is 200 from the start).
        settings: the payload limit.
    """
    app = Flask("sagemaker_ray_rl")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    @app.get("/ping")
    def ping() -> Response:
        return Response(_PING_BODY, status=200, mimetype=codecs.JSON)

    @app.post("/invocations")
    def invocations() -> Response:
        _check_content_type()
        _check_accept()
        observations, field = codecs.decode_json_request(request.get_data())
        batch = codecs.observation_batch(observations, policy.observation_space, field)
        actions = policy.compute_actions(batch)
        return Response(codecs.encode_json_response(actions), status=200, mimetype=codecs.JSON)

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        return _json_error(exc.status, exc.to_dict())

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _json_error(exc.code or 500, {"error": exc.name.replace(" ", ""), "message": exc.description})

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        logger.exception("unexpected error answering %s %s", request.method, request.path)
        return _json_error(500, {"error": "InternalServerError", "message": f"{type(exc).__name__}: {exc}"})

    return app


def _check_content_type() -> None:
    mimetype = request.mimetype or codecs.JSON  # missing Content-Type means JSON (SageMaker contract)
    if mimetype not in codecs.SUPPORTED_CONTENT_TYPES:
        raise RequestError(
            f"unsupported Content-Type {mimetype!r}",
            status=415,
            field="Content-Type",
            expected=" or ".join(codecs.SUPPORTED_CONTENT_TYPES),
        )


def _check_accept() -> None:
    """406 unless Accept is missing or allows a type in `codecs.SUPPORTED_ACCEPT` (parameters such
    as ``; charset=utf-8`` are ignored, wildcards count)."""
    header = request.headers.get("Accept", "").strip()
    if not header:
        return
    for value, quality in request.accept_mimetypes:
        mimetype = value.split(";", 1)[0].strip().lower()
        if quality > 0 and (mimetype in codecs.SUPPORTED_ACCEPT or mimetype in ("*/*", "application/*")):
            return
    raise RequestError(
        f"cannot answer in {header!r}", status=406, field="Accept", expected=" or ".join(codecs.SUPPORTED_ACCEPT)
    )


def _json_error(status: int, body: dict) -> Response:
    return Response(json.dumps(body), status=status, mimetype=codecs.JSON)
