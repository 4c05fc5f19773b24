"""One message format for every bad hyperparameter value, wherever it is read."""

from __future__ import annotations

import math

import pytest

from sagemaker_ray_rl.contract import validation
from sagemaker_ray_rl.contract.errors import HyperparameterError


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda v: validation.integer("k", v, low=0), -1, "hyperparameter 'k': expected an integer >= 0, got -1"),
        (lambda v: validation.integer("k", v, low=0), True, "hyperparameter 'k': expected an integer >= 0, got True"),
        (
            lambda v: validation.integer("k", v, low=1, high=3, why="3 hosts"),
            4,
            "expected an integer from 1 to 3 (3 hosts), got 4",
        ),
        (
            lambda v: validation.number("k", v, low=0, low_open=True),
            0,
            "hyperparameter 'k': expected a number > 0, got 0",
        ),
        (lambda v: validation.number("k", v, low=0, high=1), 1.5, "expected a number in [0, 1], got 1.5"),
        (lambda v: validation.number("k", v), math.nan, "expected a finite number, got nan"),
        (lambda v: validation.seconds("k", v), "soon", "expected a number of seconds > 0, got 'soon'"),
        (lambda v: validation.boolean("k", v), "yes", "expected true or false, got 'yes'"),
        (lambda v: validation.string("k", v), "", "expected a non-empty string, got ''"),
        (lambda v: validation.choice("k", v, ("a", "b")), "c", "expected one of ['a', 'b'], got 'c'"),
        (lambda v: validation.json_object("k", v), [1], "expected a JSON object, got [1]"),
        (lambda v: validation.like("k", v, 0.5), "x", "expected a finite number, got 'x'"),
        (lambda v: validation.like("k", v, [1]), 3, "expected a JSON list, got 3"),
    ],
)
def test_bad_values_fail_with_one_message_format(check, value, message):
    with pytest.raises(HyperparameterError) as err:
        check(value)
    assert message in str(err.value)
    assert str(err.value).startswith("hyperparameter 'k': expected ")


def test_good_values_come_back_typed():
    assert validation.integer("k", 3, low=0) == 3
    assert validation.number("k", 2) == 2.0 and isinstance(validation.number("k", 2), float)
    assert validation.boolean("k", "TRUE") is True and validation.boolean("k", False) is False
    assert validation.like("k", 3, 0.1) == 3.0
    assert validation.choice("k", "b", ("a", "b")) == "b"


def test_unknown_key_names_the_closest_accepted_one():
    err = validation.unknown("ray.join_timout_s", ["ray.join_timeout_s", "ray.gcs_port"], "the cluster")
    assert "unknown hyperparameter of the cluster 'ray.join_timout_s'. Did you mean 'ray.join_timeout_s'?" in str(err)
