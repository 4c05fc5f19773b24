"""The flask app: ``GET /ping``, ``POST /invocations`` and ``GET /execution-parameters`` (SageMaker
hosting and batch transform).

Every error leaves as JSON: `RequestError` with its own status, werkzeug's HTTP errors (404, 405,
413 for a body over ``SAGEMAKER_MAX_PAYLOAD_IN_MB``) with theirs. An unexpected exception is a
500 with a JSON body and a logged traceback; the worker keeps serving. User input is validated
before it reaches the policy (`observations`), so it never gets that far.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import tree
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sagemaker_ray_rl.environment import ServingSettings
from sagemaker_ray_rl.errors import RequestError
from sagemaker_ray_rl.policy import Policy
from sagemaker_ray_rl.serving import codecs
from sagemaker_ray_rl.serving.observations import describe, observation_batch, state_batch

logger = logging.getLogger(__name__)

_PING_BODY = b'{"status": "healthy"}'


def create_app(policy: Policy, settings: ServingSettings) -> Flask:
    """A flask app answering for `policy`.

    Args:
        policy: the loaded policy (loaded before the app exists, so ``/ping`` is 200 from the start).
        settings: payload limit, default Accept, worker count (for ``/execution-parameters``).
    """
    app = Flask("sagemaker_ray_rl")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    parameters_body = execution_parameters(settings)

    @app.get("/ping")
    def ping() -> Response:
        return Response(_PING_BODY, status=200, mimetype=codecs.JSON)

    @app.get("/execution-parameters")
    def parameters() -> Response:
        return Response(parameters_body, status=200, mimetype=codecs.JSON)

    @app.post("/invocations")
    def invocations() -> Response:
        status, mimetype, body = answer_invocation(policy, settings, request.headers, request.get_data())
        return Response(body, status=status, mimetype=mimetype)

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


def execution_parameters(settings: ServingSettings) -> bytes:
    """``GET /execution-parameters`` for batch transform: one concurrent transform per worker,
    multi-record batches up to the payload limit."""
    return json.dumps(
        {
            "MaxConcurrentTransforms": settings.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": max(1, int(settings.max_payload_mb)),
        }
    ).encode()


def answer_invocation(policy: Policy, settings: ServingSettings, headers: Any, body: bytes) -> tuple[int, str, bytes]:
    """``POST /invocations`` without a web framework (shared by the flask app and Ray Serve).

    Args:
        policy: the loaded policy.
        settings: payload limit and default Accept.
        headers: the request headers (a case-insensitive mapping with ``get``).
        body: the request body.

    Returns:
        ``(status, content type, body)``: 200 with the answer, or a 4xx with a JSON error naming
        the field and what was expected.
    """
    try:
        if len(body) > settings.max_payload_bytes:
            raise RequestError(
                f"request body is {len(body)} bytes, more than SAGEMAKER_MAX_PAYLOAD_IN_MB allows",
                status=413,
                expected=f"at most {settings.max_payload_bytes} bytes",
            )
        content_type = _content_type(headers.get("Content-Type"))
        accept = _accept(headers.get("Accept"), settings.default_accept or content_type)
        header_options = codecs.parse_custom_attributes(headers.get(codecs.CUSTOM_ATTRIBUTES))
        decoded = codecs.decode(body, content_type, header_options)
        results = invoke(policy, decoded)
        return 200, accept, codecs.encode(results, accept, decoded)
    except RequestError as exc:
        return exc.status, codecs.JSON, json.dumps(exc.to_dict()).encode()


def invoke(policy: Policy, decoded: codecs.Decoded) -> list[dict[str, Any]]:
    """Answer every group of a decoded request.

    Returns:
        One JSON-ready dict per observation, in request order: ``action``, ``state_out`` for
        stateful modules, and the requested outputs.

    Raises:
        RequestError: 400 for observations or states the module's spaces do not hold.
    """
    results: list[dict[str, Any]] = [{}] * decoded.count
    groups = decoded.groups if decoded.agents is None else _agent_groups(policy, decoded)
    for group in groups:
        pipeline = policy.pipeline(group.options.module_id)
        observations = group.observations
        if isinstance(observations, np.ndarray):
            observations = _array_batch(observations, pipeline.observation_space, group.field)
            group.positions = list(range(len(observations)))
            results = [{}] * len(observations)
        if group.field == "agents":  # already validated one by one, with the agent's field name
            batch = tree.map_structure(lambda *xs: np.concatenate(xs), *observations)
        else:
            batch = observation_batch(observations, pipeline.observation_space, group.field)
        state = None
        if pipeline.module.is_stateful():
            field = "state" if group.field == "observation" else "states"
            state = state_batch(group.states, pipeline.module.get_initial_state(), field)
        columns = policy.compute(
            batch,
            module_id=pipeline.module_id,
            explore=group.options.explore,
            outputs=group.options.outputs,
            state=state,
        )
        as_lists = {name: _per_record(value, len(group.positions)) for name, value in columns.items()}
        for i, position in enumerate(group.positions):
            results[position] = {name: values[i] for name, values in as_lists.items()}
    return results


def _agent_groups(policy: Policy, decoded: codecs.Decoded) -> list[codecs.Group]:
    """Split an ``agents`` request into one group per module (``module_id`` if the request names
    one, else the checkpoint's ``policy_mapping_fn``), each observation validated under the field
    ``agents.<agent_id>``."""
    (group,) = decoded.groups
    by_module: dict[str, codecs.Group] = {}
    for position, (agent_id, observation) in enumerate(zip(decoded.agents or [], group.observations)):
        module_id = group.options.module_id or policy.module_for_agent(agent_id)
        pipeline = policy.pipeline(module_id)
        try:
            single = observation_batch([observation], pipeline.observation_space, "observation")
        except RequestError as exc:
            exc.field = f"agents.{agent_id}" + (exc.field or "")[len("observation"):]
            raise
        target = by_module.get(module_id)
        if target is None:
            options = codecs.Options(module_id, group.options.explore, group.options.outputs)
            target = by_module[module_id] = codecs.Group([], "agents", options, [], [])
        target.observations.append(single)
        target.positions.append(position)
        target.states.append(group.states[position] if group.states else None)
    return list(by_module.values())


def _per_record(value: Any, count: int) -> list[Any]:
    """A batch-first column (an array, or a dict/tuple of arrays for structured spaces) as one
    JSON-ready value per record; one ``tolist`` per array, not per record."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    lists = tree.map_structure(lambda x: np.asarray(x).tolist(), value)
    return [tree.map_structure_up_to(value, lambda column, i=i: column[i], lists) for i in range(count)]


def _array_batch(array: np.ndarray, space: Any, field: str) -> np.ndarray:
    """CSV rows or an NPY array as a batch of observations of a Box `space`."""
    shape = getattr(space, "shape", None)
    if shape is None or space.__class__.__name__ != "Box":
        raise RequestError(
            f"{field}s of numbers cannot hold observations of {space}",
            field="Content-Type",
            expected="application/json or application/jsonlines for this observation space",
        )
    if field == "row":
        size = int(np.prod(shape))
        if array.ndim != 2 or array.shape[1] != size:
            raise RequestError(
                f"rows have {array.shape[-1]} values, the policy expects {size}",
                field="row",
                expected=f"{size} comma-separated numbers per row ({describe(space)}, flattened)",
            )
        return array.reshape(len(array), *shape)
    if array.shape == shape:
        return array[None]
    if array.shape[1:] != shape or array.ndim == 0 or len(array) == 0:
        raise RequestError(
            f"array has shape {array.shape}, the policy expects {shape} or (batch, *{shape})",
            field="array",
            expected=f"an array of shape (batch, {', '.join(map(str, shape))}) ({space.dtype})",
        )
    return array


def _content_type(header: str | None) -> str:
    mimetype = codecs.media_type(header) or codecs.JSON  # missing Content-Type means JSON (SageMaker contract)
    if mimetype not in codecs.SUPPORTED:
        raise RequestError(
            f"unsupported Content-Type {header!r}", status=415, field="Content-Type", expected=" or ".join(codecs.SUPPORTED)
        )
    return mimetype


def _accept(header: str | None, default: str) -> str:
    """The response type: the first acceptable supported type in `header` (q > 0, listed order),
    `default` for a missing header or a wildcard.

    Raises:
        RequestError: 406 when nothing in `header` is supported.
    """
    if not header or not header.strip():
        return default
    for item in header.split(","):
        parts = item.split(";")
        mimetype = codecs.media_type(parts[0])
        quality = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if mimetype in codecs.SUPPORTED:
            return mimetype
        if mimetype in ("*/*", "application/*", "text/*"):
            return default
    raise RequestError(f"cannot answer in {header!r}", status=406, field="Accept", expected=" or ".join(codecs.SUPPORTED))


def _json_error(status: int, body: dict) -> Response:
    return Response(json.dumps(body), status=status, mimetype=codecs.JSON)
