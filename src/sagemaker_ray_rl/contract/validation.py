"""One way to check a decoded hyperparameter value, with one message format:
``hyperparameter 'key': expected <what>, got <value>``.

SageMaker passes every hyperparameter as a string; `environment.decode_hyperparameters` has decoded
them as JSON. Every module that reads hyperparameters (the built-in experiment, ``ray.*``,
``offline.*``) checks values with these functions, so a bad value fails before Ray starts with the
same kind of message wherever it is read. Each raises `HyperparameterError`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sagemaker_ray_rl.contract.errors import HyperparameterError


def invalid(key: str, expected: str, value: Any) -> HyperparameterError:
    """The error for `key` whose `value` is not what was `expected` (a phrase: "an integer >= 0")."""
    return HyperparameterError(f"hyperparameter {key!r}: expected {expected}, got {value!r}")


def unknown(key: str, accepted: Iterable[str], where: str = "") -> HyperparameterError:
    """The error for a key no reader accepts, with the closest accepted key as a hint.

    Args:
        key: the unknown key as given.
        accepted: the keys that would have been accepted.
        where: who reads this family of keys, e.g. ``"the cluster"`` (for the message).
    """
    accepted = sorted(accepted)
    close = difflib.get_close_matches(key, accepted, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    family = f" of {where}" if where else ""
    return HyperparameterError(f"unknown hyperparameter{family} {key!r}.{hint} Accepted: {', '.join(accepted)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(key: str, value: Any, *, low: int | None = None, high: int | None = None, why: str = "") -> int:
    """`value` as an integer in ``[low, high]`` (either bound optional).

    Args:
        why: a reason for the bound, shown in parentheses (``"the job has 2 host(s)"``).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        if low is not None and high is not None:
            expected = f"an integer from {low} to {high}"
        elif low is not None:
            expected = f"an integer >= {low}"
        elif high is not None:
            expected = f"an integer <= {high}"
        else:
            expected = "an integer"
        raise invalid(key, expected + (f" ({why})" if why else ""), value)
    return value


def number(
    key: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """`value` as a finite float in ``[low, high]`` (``(low, high]`` with `low_open`)."""
    ok = _is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if low is not None and high is not None:
            expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            expected = f"a number {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            expected = f"a number <= {high:g}"
        else:
            expected = "a finite number"
        raise invalid(key, expected, value)
    return float(value)


def seconds(key: str, value: Any) -> float:
    """`value` as a number of seconds > 0."""
    if not _is_number(value) or value <= 0:
        raise invalid(key, "a number of seconds > 0", value)
    return float(value)


def boolean(key: str, value: Any) -> bool:
    """`value` as a bool: JSON ``true``/``false`` or the strings ``"true"``/``"false"`` (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(key, "true or false", value)


def string(key: str, value: Any) -> str:
    """`value` as a non-empty string."""
    if not isinstance(value, str) or not value:
        raise invalid(key, "a non-empty string", value)
    return value


def choice(key: str, value: Any, choices: Sequence[str]) -> str:
    """`value` as one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise invalid(key, f"one of {list(choices)}", value)
    return value


def json_object(key: str, value: Any) -> dict[str, Any]:
    """`value` as a JSON object (a dict)."""
    if not isinstance(value, dict):
        raise invalid(key, "a JSON object", value)
    return dict(value)


def like(key: str, value: Any, default: Any) -> Any:
    """`value` checked against the type of its `default`: a string, an integer, a number (ints
    become floats) or, for a list default, a list. Used where defaults are declared once as typed
    dataclass fields."""
    if isinstance(default, str):
        if not isinstance(value, str):
            raise invalid(key, "a string", value)
        return value
    if isinstance(default, bool):
        return boolean(key, value)
    if isinstance(default, int):
        return integer(key, value)
    if isinstance(default, float):
        return number(key, value)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, list):
            raise invalid(key, "a JSON list", value)
        return value
    return value
