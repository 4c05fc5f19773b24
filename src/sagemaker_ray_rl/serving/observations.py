"""Decode and validate observations against the policy's observation space.

Requests carry observations as JSON values (nested lists, numbers, objects for Dict spaces,
lists for Tuple spaces) or as arrays (CSV, NPY). `observation_batch` turns a list of them into
one batch in the structure of the space (arrays with a leading batch axis, in the space's dtype),
refusing anything the space does not contain with a `RequestError` that names the field
(``instances[3].position``) and what was expected. Box observations of the same shape, the common
case, are stacked by NumPy in one call; other spaces are decoded observation by observation.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import tree

from sagemaker_ray_rl.contract.errors import RequestError


def describe(space: gym.Space) -> str:
    """What one observation of `space` looks like in JSON, for error messages."""
    if isinstance(space, gym.spaces.Box):
        bounds = ""
        if np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)):
            bounds = f" in [{float(np.min(space.low)):g}, {float(np.max(space.high)):g}]"
        if space.shape == ():
            return f"a number ({space.dtype}){bounds}"
        if len(space.shape) == 1:
            return f"a list of {space.shape[0]} numbers (shape {space.shape}, {space.dtype}){bounds}"
        return f"nested lists of numbers of shape {space.shape} ({space.dtype}){bounds}"
    if isinstance(space, gym.spaces.Discrete):
        return f"an integer in [{int(space.start)}, {int(space.start + space.n - 1)}]"
    if isinstance(space, gym.spaces.MultiDiscrete):
        return f"a list of {len(space.nvec)} integers, each in [0, nvec) for nvec {space.nvec.tolist()}"
    if isinstance(space, gym.spaces.MultiBinary):
        return f"0/1 integers of shape {space.shape}"
    if isinstance(space, gym.spaces.Dict):
        return "an object {" + ", ".join(f'"{k}": {describe(s)}' for k, s in space.spaces.items()) + "}"
    if isinstance(space, gym.spaces.Tuple):
        return "a list [" + ", ".join(describe(s) for s in space.spaces) + "]"
    return str(space)


def observation_batch(observations: list[Any] | np.ndarray, space: gym.Space, field: str) -> Any:
    """Stack raw observations into one batch the policy accepts.

    Args:
        observations: one entry per observation (JSON values), or an array whose first axis is
            the batch (CSV and NPY bodies).
        space: the policy's observation space (what the env produced).
        field: the request field for error messages (``instances``, ``observation``, ``line``).

    Returns:
        For Box, Discrete, MultiDiscrete and MultiBinary spaces an array of shape
        ``(len(observations), *space.shape)`` in ``space.dtype``; for Dict and Tuple spaces a
        dict or tuple of such batches.

    Raises:
        RequestError: 400 naming the first bad observation (``instances[3]``, ``observation.pos``):
            wrong shape or structure, non-numbers, NaN, Discrete values out of range.
    """
    if isinstance(space, gym.spaces.Box):
        batch = _fast_box(observations, space)
        if batch is not None:
            return batch
    if len(observations) == 0:
        raise RequestError("no observations", field=field, expected=f"one or more of {describe(space)}")
    decoded = [_decode(obs, space, _field(field, i, len(observations))) for i, obs in enumerate(observations)]
    return tree.map_structure(lambda *leaves: np.stack(leaves), *decoded)


def _fast_box(observations: Any, space: gym.spaces.Box) -> np.ndarray | None:
    """The batch, when all observations are numbers of the right shape that stay finite in the
    (float) space's dtype; else None (the slow path then finds and names the bad one)."""
    if space.dtype.kind != "f":
        return None
    try:
        batch = np.asarray(observations)
    except (ValueError, TypeError, OverflowError):
        return None
    if batch.dtype.kind not in "iuf" or batch.shape[1:] != space.shape or len(batch) == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        batch = batch.astype(space.dtype, copy=False)
    return batch if np.isfinite(batch).all() else None


def _field(field: str, index: int, count: int) -> str:
    return field if field == "observation" or (field.startswith("line") and count == 1) else f"{field}[{index}]"


def _decode(value: Any, space: gym.Space, where: str) -> Any:
    expected = describe(space)
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(value, dict):
            raise RequestError(f"observation must be a JSON object, got {_kind(value)}", field=where, expected=expected)
        missing = [k for k in space.spaces if k not in value]
        extra = [k for k in value if k not in space.spaces]
        if missing or extra:
            raise RequestError(
                f"observation keys {sorted(value)} do not match the space: missing {missing}, unexpected {extra}",
                field=where,
                expected=expected,
            )
        return {k: _decode(value[k], s, f"{where}.{k}") for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        if not isinstance(value, list) or len(value) != len(space.spaces):
            raise RequestError(
                f"observation must be a list of {len(space.spaces)} items, got {_kind(value)}",
                field=where,
                expected=expected,
            )
        return tuple(_decode(v, s, f"{where}[{i}]") for i, (v, s) in enumerate(zip(value, space.spaces)))
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return _decode_array(value, space, where, expected)
    raise RequestError(f"observations of {space} cannot be decoded from requests", field=where, expected=expected)


def _decode_array(value: Any, space: gym.Space, where: str, expected: str) -> np.ndarray:
    if isinstance(value, (dict, str)) or value is None:
        raise RequestError(f"observation must hold numbers only, got {_kind(value)}", field=where, expected=expected)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise RequestError("observation is a ragged nested list", field=where, expected=expected) from None
    if arr.dtype.kind not in "iuf":
        raise RequestError(f"observation must hold numbers only, got {_kind(arr)}", field=where, expected=expected)
    if arr.shape != space.shape:
        raise RequestError(
            f"observation has shape {arr.shape}, the policy expects {space.shape}", field=where, expected=expected
        )
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise RequestError("observation contains NaN", field=where, expected=expected)
        if not np.isfinite(arr).all() and not isinstance(space, gym.spaces.Box):
            raise RequestError("observation contains infinity", field=where, expected=expected)
    if isinstance(space, gym.spaces.Box):
        if space.dtype.kind in "iu" and arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise RequestError("observation must hold integers", field=where, expected=expected)
        if space.dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                cast = arr.astype(space.dtype)
            if not np.isfinite(cast).all():
                raise RequestError(
                    f"observation has values that are infinite in {space.dtype}", field=where, expected=expected
                )
            return cast
        if space.dtype.kind in "iu" and not space.contains(np.asarray(arr).astype(space.dtype)):
            raise RequestError("observation is outside the space's bounds", field=where, expected=expected)
        return arr.astype(space.dtype)
    # Discrete, MultiDiscrete, MultiBinary: integers within range.
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise RequestError("observation must hold integers", field=where, expected=expected)
    if np.abs(arr).max(initial=0) > 2**62 or not space.contains(arr.astype(space.dtype)):
        raise RequestError(f"observation {arr.tolist()} is not in {space}", field=where, expected=expected)
    return arr.astype(space.dtype)


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return {"b": "booleans", "U": "strings", "S": "strings", "O": "null or mixed values"}.get(
            value.dtype.kind, str(value.dtype)
        )
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def state_batch(states: list[Any] | None, initial: Any, field: str) -> Any:
    """Stack RNN state-ins (one per observation; None means the module's initial state).

    Args:
        states: JSON values in the structure of `initial` (dicts of nested lists), or None.
        initial: ``module.get_initial_state()``: the structure and shapes, no batch axis.
        field: ``states`` or ``state`` for error messages.

    Returns:
        The batch, each leaf ``(len(states), *leaf.shape)`` float32; None when `states` is None.

    Raises:
        RequestError: 400 for a state of another structure or shape.
    """
    if states is None or all(s is None for s in states):
        return None
    template = tree.map_structure(lambda x: np.asarray(x, dtype=np.float32), initial)
    shapes = tree.map_structure(lambda x: list(x.shape), template)
    expected = f"the module's state structure with shapes {json.dumps(shapes)} (state_out of a previous answer)"
    decoded = []
    for i, state in enumerate(states):
        where = field if field == "state" else f"{field}[{i}]"
        if state is None:
            decoded.append(template)
            continue
        try:
            value = tree.map_structure_up_to(template, lambda t, s: np.asarray(s, dtype=np.float32), template, state)
        except (TypeError, ValueError) as exc:
            raise RequestError(
                f"state does not match the module's state: {exc}", field=where, expected=expected
            ) from None
        if tree.map_structure(lambda x: list(x.shape), value) != shapes or not all(
            np.isfinite(x).all() for x in tree.flatten(value)
        ):
            raise RequestError("state has other shapes or non-finite values", field=where, expected=expected)
        decoded.append(value)
    return tree.map_structure(lambda *leaves: np.stack(leaves), *decoded)
