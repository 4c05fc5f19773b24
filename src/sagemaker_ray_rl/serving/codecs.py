"""Request and response bodies of ``/invocations``.

Request (``application/json``; a missing Content-Type means JSON, per the SageMaker contract)::

    {"instances": [obs, obs, ...]}     a batch
    {"observation": obs}                one observation

Response (``application/json``)::

    {"predictions": [{"action": a}, ...]}    one entry per observation, in order

Every problem raises `RequestError` naming the field and what was expected.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np

from sagemaker_ray_rl.errors import RequestError

JSON = "application/json"
#: Content types `/invocations` reads.
SUPPORTED_CONTENT_TYPES = (JSON,)
#: Content types `/invocations` writes.
SUPPORTED_ACCEPT = (JSON,)

_REQUEST_SHAPE = '{"instances": [observation, ...]} or {"observation": observation}'


def decode_json_request(body: bytes) -> tuple[list[Any], str]:
    """Parse a JSON request body into a list of raw observations.

    Args:
        body: the request body, UTF-8 JSON.

    Returns:
        ``(observations, field)``: the raw observations and the name of the field they came from
        (``instances`` or ``observation``), used in error messages.

    Raises:
        RequestError: 400 for a body that is not JSON, not an object, has neither or both keys, or
            an empty ``instances`` list.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", expected=_REQUEST_SHAPE) from exc
    if not isinstance(payload, dict):
        raise RequestError(
            f"request body must be a JSON object, got {type(payload).__name__}", expected=_REQUEST_SHAPE
        )
    has_instances, has_observation = "instances" in payload, "observation" in payload
    if has_instances == has_observation:
        raise RequestError(
            "request must have exactly one of 'instances' and 'observation'"
            + (f"; it has keys {sorted(payload)}" if payload else ""),
            expected=_REQUEST_SHAPE,
        )
    if has_observation:
        return [payload["observation"]], "observation"
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(
            "'instances' must be a non-empty list of observations", field="instances", expected=_REQUEST_SHAPE
        )
    return instances, "instances"


def observation_batch(observations: list[Any], space: gym.spaces.Box, field: str) -> np.ndarray:
    """Stack raw observations into one array the policy accepts.

    Args:
        observations: each a (nested) list of numbers, or a number for scalar spaces.
        space: the policy's observation space.
        field: the request field for error messages (``instances`` or ``observation``).

    Returns:
        Array of shape ``(len(observations), *space.shape)`` and dtype ``space.dtype``.

    Raises:
        RequestError: 400 naming the first bad observation (``instances[3]``), for a wrong shape,
            non-numeric values (strings, booleans, null) or NaN.
    """
    expected = f"{_describe(space)}"
    try:
        batch = np.asarray(observations)
    except ValueError:  # ragged nesting
        batch = None
    if batch is None or batch.dtype.kind not in "iuf" or batch.shape[1:] != space.shape:
        _raise_first_bad(observations, space, field, expected)
    if batch.dtype.kind == "f" and np.isnan(batch).any():
        index = int(np.argwhere(np.isnan(batch.reshape(len(batch), -1)).any(axis=1))[0][0])
        raise RequestError("observation contains NaN", field=_field(field, index), expected=expected)
    return batch.astype(space.dtype, copy=False)


def encode_json_response(actions: np.ndarray) -> bytes:
    """``{"predictions": [{"action": ...}, ...]}`` for a batch of actions (ints, floats or lists)."""
    return json.dumps({"predictions": [{"action": a} for a in actions.tolist()]}).encode()


def _raise_first_bad(observations: list[Any], space: gym.spaces.Box, field: str, expected: str) -> None:
    for index, obs in enumerate(observations):
        where = _field(field, index)
        try:
            arr = np.asarray(obs)
        except ValueError:
            raise RequestError("observation is a ragged nested list", field=where, expected=expected) from None
        if arr.dtype.kind not in "iuf":
            raise RequestError(
                f"observation must hold numbers only, got {_json_kind(arr)}", field=where, expected=expected
            )
        if arr.shape != space.shape:
            raise RequestError(
                f"observation has shape {arr.shape}, the policy expects {space.shape}", field=where, expected=expected
            )
    raise RequestError("observations could not be stacked into one batch", field=field, expected=expected)


def _field(field: str, index: int) -> str:
    return field if field == "observation" else f"{field}[{index}]"


def _describe(space: gym.spaces.Box) -> str:
    if space.shape == ():
        return f"a number ({space.dtype})"
    if len(space.shape) == 1:
        return f"a list of {space.shape[0]} numbers (shape {space.shape}, {space.dtype})"
    return f"nested lists of numbers of shape {space.shape} ({space.dtype})"


def _json_kind(arr: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings", "O": "null or mixed values"}.get(
        arr.dtype.kind, str(arr.dtype)
    )
