from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from sagemaker_ray_rl.errors import RequestError
from sagemaker_ray_rl.serving.codecs import decode_json_request, encode_json_response, observation_batch

BOX4 = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def test_instances_and_single_observation():
    assert decode_json_request(b'{"instances": [[1, 2, 3, 4], [0, 0, 0, 0]]}') == (
        [[1, 2, 3, 4], [0, 0, 0, 0]],
        "instances",
    )
    assert decode_json_request(b'{"observation": [1, 2, 3, 4]}') == ([[1, 2, 3, 4]], "observation")


def test_batch_has_the_space_dtype_and_shape():
    batch = observation_batch([[1, 2, 3, 4], [0.5, 0, 0, 0]], BOX4, "instances")
    assert batch.dtype == np.float32 and batch.shape == (2, 4)
    image = gym.spaces.Box(0, 255, (2, 3), np.uint8)
    assert observation_batch([[[1, 2, 3], [4, 5, 6]]], image, "instances").dtype == np.uint8


@pytest.mark.parametrize(
    "body, message, field",
    [
        (b"not json", "request body is not valid JSON", None),
        (b"\xff\xfe", "request body is not valid JSON", None),
        (b"[1, 2]", "must be a JSON object, got list", None),
        (b"{}", "exactly one of 'instances' and 'observation'", None),
        (b'{"inputs": [1]}', "it has keys ['inputs']", None),
        (b'{"instances": [], "observation": []}', "exactly one of", None),
        (b'{"instances": []}', "non-empty list", "instances"),
        (b'{"instances": {"a": 1}}', "non-empty list", "instances"),
    ],
)
def test_malformed_bodies(body, message, field):
    with pytest.raises(RequestError) as info:
        decode_json_request(body)
    assert info.value.status == 400
    assert message in info.value.message
    assert info.value.field == field
    assert "instances" in info.value.expected


@pytest.mark.parametrize(
    "observations, message, field",
    [
        ([[1, 2, 3]], "observation has shape (3,), the policy expects (4,)", "instances[0]"),
        ([[1, 2, 3, 4], [1, 2]], "observation has shape (2,)", "instances[1]"),
        ([[1, 2, 3, 4], [[1, 2], [3, 4]]], "observation has shape (2, 2)", "instances[1]"),
        ([[1, 2, 3, "x"]], "numbers only, got strings", "instances[0]"),
        ([[1, 2, 3, None]], "numbers only, got null or mixed values", "instances[0]"),
        ([[True, False, True, True]], "numbers only, got booleans", "instances[0]"),
        ([[1, 2, 3, 4], [1, [2], 3, 4]], "ragged", "instances[1]"),
        ([[1, 2, 3, 4], [1, 2, float("nan"), 4]], "NaN", "instances[1]"),
        ([5], "observation has shape ()", "instances[0]"),
    ],
)
def test_bad_observations_name_the_instance_and_the_expected_shape(observations, message, field):
    with pytest.raises(RequestError) as info:
        observation_batch(observations, BOX4, "instances")
    assert info.value.status == 400
    assert message in info.value.message
    assert info.value.field == field
    assert info.value.expected == "a list of 4 numbers (shape (4,), float32)"


def test_single_observation_errors_name_the_observation_field():
    with pytest.raises(RequestError) as info:
        observation_batch([[1, 2]], BOX4, "observation")
    assert info.value.field == "observation"


def test_response_shape():
    assert json.loads(encode_json_response(np.array([1, 0]))) == {"predictions": [{"action": 1}, {"action": 0}]}
    assert json.loads(encode_json_response(np.array([[0.5, -1.0]], dtype=np.float32))) == {
        "predictions": [{"action": [0.5, -1.0]}]
    }


def test_error_body():
    body = RequestError("bad", status=415, field="Content-Type", expected="application/json").to_dict()
    assert body == {"error": "UnsupportedMediaType", "message": "bad", "field": "Content-Type", "expected": "application/json"}
