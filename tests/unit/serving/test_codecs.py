from __future__ import annotations

import io
import json

import gymnasium as gym
import numpy as np
import pytest

from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.serving import codecs
from sagemaker_ray_rl.serving.observations import observation_batch, state_batch

BOX4 = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
DICT = gym.spaces.Dict(
    {
        "pos": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        "mode": gym.spaces.Discrete(3),
        "pair": gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.MultiDiscrete([2, 3]))),
    }
)


def decode_json(body: bytes, header: dict | None = None) -> codecs.Decoded:
    return codecs.decode(body, codecs.JSON, header or {})


def test_instances_single_observation_and_legacy_inputs():
    decoded = decode_json(b'{"instances": [[1, 2, 3, 4], [0, 0, 0, 0]]}')
    assert decoded.count == 2 and decoded.groups[0].observations == [[1, 2, 3, 4], [0, 0, 0, 0]]
    assert decoded.groups[0].options == codecs.Options()
    single = decode_json(b'{"observation": [1, 2, 3, 4], "explore": true, "outputs": ["vf_preds"]}')
    assert single.groups[0].field == "observation" and single.groups[0].options == codecs.Options(
        None, True, ("vf_preds",)
    )
    legacy = decode_json(b'{"inputs": {"observations": [[1, 2, 3, 4]], "prev_action": [0], "seq_lens": -1}}')
    assert legacy.legacy and legacy.groups[0].options.outputs == (
        "action_logp",
        "action_prob",
        "action_dist_inputs",
        "vf_preds",
    )


def test_custom_attributes_header():
    assert codecs.parse_custom_attributes("explore=true; module_id=p0; outputs=action_prob,vf_preds") == {
        "explore": True,
        "module_id": "p0",
        "outputs": ["action_prob", "vf_preds"],
    }
    assert codecs.parse_custom_attributes("trace=abc, explore=false") == {"explore": False}
    with pytest.raises(RequestError) as info:
        codecs.parse_custom_attributes("explore=maybe")
    assert info.value.field == codecs.CUSTOM_ATTRIBUTES
    decoded = decode_json(b'{"observation": [1, 2, 3, 4], "explore": false}', {"explore": True, "module_id": "p1"})
    assert decoded.groups[0].options == codecs.Options("p1", False, ())


@pytest.mark.parametrize(
    "body, message, field",
    [
        (b"not json", "request body is not valid JSON", None),
        (b"\xff\xfe", "request body is not valid JSON", None),
        (b"[1, 2]", "must be a JSON object, got list", None),
        (b"{}", "exactly one of 'instances', 'observation', 'inputs' and 'agents'", None),
        (b'{"agents": []}', "non-empty object mapping agent ids", "agents"),
        (b'{"instancez": [1]}', "it has keys ['instancez']", None),
        (b'{"instances": [], "observation": []}', "exactly one of", None),
        (b'{"instances": []}', "non-empty list", "instances"),
        (b'{"instances": {"a": 1}}', "non-empty list", "instances"),
        (b'{"inputs": {"obs": [1]}}', "non-empty list 'observations'", "inputs.observations"),
        (b'{"observation": [1], "explore": "yes"}', "'explore' must be true or false", "explore"),
        (b'{"observation": [1], "outputs": ["logits"]}', "'outputs' must be a list", "outputs"),
        (b'{"observation": [1], "module_id": 3}', "'module_id' must be a string", "module_id"),
        (b'{"instances": [[1]], "states": [1, 2]}', "one state per instance", "states"),
    ],
)
def test_malformed_json_bodies(body, message, field):
    with pytest.raises(RequestError) as info:
        decode_json(body)
    assert info.value.status == 400
    assert message in info.value.message
    assert info.value.field == field
    assert info.value.expected


def test_json_lines_records_group_by_options_and_keep_order():
    body = b'[1, 2, 3, 4]\n{"observation": [0, 0, 0, 0], "explore": true}\n\n[5, 6, 7, 8]\n'
    decoded = codecs.decode(body, codecs.JSONLINES, {})
    assert decoded.count == 3
    plain, explore = decoded.groups
    assert plain.observations == [[1, 2, 3, 4], [5, 6, 7, 8]] and plain.positions == [0, 2]
    assert explore.options.explore and explore.positions == [1]
    with pytest.raises(RequestError) as info:
        codecs.decode(b"[1, 2, 3, 4]\n{oops\n", codecs.JSONLINES, {})
    assert info.value.field == "line 2"


def test_csv_and_npy_bodies():
    decoded = codecs.decode(b"1,2,3,4\n0.5,0,0,0\n", codecs.CSV, {})
    assert decoded.groups[0].observations.tolist() == [[1, 2, 3, 4], [0.5, 0, 0, 0]]
    for bad in (b"1,2\n3\n", b"a,b\n", b"\xff"):
        with pytest.raises(RequestError):
            codecs.decode(bad, codecs.CSV, {})
    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 4), np.float32))
    assert codecs.decode(buffer.getvalue(), codecs.NPY, {}).groups[0].observations.shape == (2, 4)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RequestError) as info:
        codecs.decode(pickled.getvalue(), codecs.NPY, {})
    assert "not a .npy array" in info.value.message


def test_batches_have_the_space_dtype_and_structure():
    batch = observation_batch([[1, 2, 3, 4], [0.5, 0, 0, 0]], BOX4, "instances")
    assert batch.dtype == np.float32 and batch.shape == (2, 4)
    image = gym.spaces.Box(0, 255, (2, 3), np.uint8)
    assert observation_batch([[[1, 2, 3], [4, 5, 6]]], image, "instances").dtype == np.uint8
    obs = {"pos": [0.5, -0.5], "mode": 2, "pair": [1, [1, 2]]}
    batch = observation_batch([obs, obs], DICT, "instances")
    assert batch["pos"].shape == (2, 2) and batch["mode"].tolist() == [2, 2] and batch["pair"][1].shape == (2, 2)


@pytest.mark.parametrize(
    "observations, space, message, field",
    [
        ([[1, 2, 3]], BOX4, "observation has shape (3,), the policy expects (4,)", "instances[0]"),
        ([[1, 2, 3, 4], [1, 2]], BOX4, "observation has shape (2,)", "instances[1]"),
        ([[1, 2, 3, "x"]], BOX4, "numbers only, got strings", "instances[0]"),
        ([[1, 2, 3, None]], BOX4, "numbers only, got null or mixed values", "instances[0]"),
        ([[True, False, True, True]], BOX4, "numbers only, got booleans", "instances[0]"),
        ([[1, 2, 3, 4], [1, [2], 3, 4]], BOX4, "ragged", "instances[1]"),
        ([[1, 2, 3, 4], [1, 2, float("nan"), 4]], BOX4, "NaN", "instances[1]"),
        ([[1, 2, 3, 1e300]], BOX4, "infinite in float32", "instances[0]"),
        ([{"pos": [0, 0], "mode": 3, "pair": [0, [0, 0]]}], DICT, "is not in Discrete(3)", "instances[0].mode"),
        ([{"pos": [0, 0], "mode": 1.5, "pair": [0, [0, 0]]}], DICT, "must hold integers", "instances[0].mode"),
        ([{"pos": [0, 0], "pair": [0, [0, 0]]}], DICT, "missing ['mode']", "instances[0]"),
        ([{"pos": [0, 0], "mode": 1, "pair": [0]}], DICT, "list of 2 items", "instances[0].pair"),
        ([{"pos": [0, 0], "mode": 1, "pair": [0, [2, 0]]}], DICT, "is not in MultiDiscrete", "instances[0].pair[1]"),
        ([[1, 2]], DICT, "must be a JSON object", "instances[0]"),
    ],
)
def test_bad_observations_name_the_field_and_the_expected_shape(observations, space, message, field):
    with pytest.raises(RequestError) as info:
        observation_batch(observations, space, "instances")
    assert info.value.status == 400
    assert message in info.value.message
    assert info.value.field == field
    assert info.value.expected


def test_states_are_stacked_or_refused():
    initial = {"h": np.zeros(3, np.float32), "c": np.zeros(3, np.float32)}
    batch = state_batch([None, {"h": [1, 2, 3], "c": [0, 0, 1]}], initial, "states")
    assert batch["h"].tolist() == [[0, 0, 0], [1, 2, 3]]
    assert state_batch(None, initial, "state") is None
    for bad in ({"h": [1, 2]}, {"h": [1, 2, 3], "c": [1, 2]}, [1, 2, 3], {"h": [1, 2, 3], "c": [0, 0, float("nan")]}):
        with pytest.raises(RequestError) as info:
            state_batch([bad], initial, "state")
        assert info.value.field == "state"


def test_responses_per_accept_type():
    results = [{"action": 1, "action_prob": 0.5}, {"action": 0, "action_prob": 0.25}]
    decoded = codecs.Decoded([], 2)
    assert json.loads(codecs.encode(results, codecs.JSON, decoded)) == {"predictions": results}
    lines = codecs.encode(results, codecs.JSONLINES, decoded).decode()
    assert lines.endswith("\n") and [json.loads(line) for line in lines.splitlines()] == results
    assert codecs.encode(results, codecs.CSV, decoded) == b"1,0.5\n0,0.25\n"
    assert np.load(io.BytesIO(codecs.encode(results, codecs.NPY, decoded))).tolist() == [1, 0]
    legacy = codecs.Decoded([], 2, legacy=True)
    assert json.loads(codecs.encode([{"action": [0.5], "vf_preds": 1.0}], codecs.JSON, legacy)) == {
        "outputs": {"actions_0": [[0.5]], "vf_preds": [1.0]}
    }


@pytest.mark.parametrize(
    "column",
    [
        np.array([4, 0, 1, 3], dtype=np.int64),
        np.array([7], dtype=np.int64),
        np.array([-3, 2], dtype=np.int8),
        np.array([[2**40, 1], [0, 2**63 - 1]], dtype=np.uint64),
        np.array([0.1, -1e-40, 3.4e38, np.nan, np.inf, -np.inf], dtype=np.float32),
        np.array([1.04296875, -0.12854], dtype=np.float16),
        np.array([[0.1, 0.2, 0.3], [-1.5, 0.0, 2.0]], dtype=np.float32),
        np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])[:, ::-1],  # not C-contiguous
        np.array([[0.25], [0.5]]),
        np.zeros((3, 0), dtype=np.float32),
    ],
    ids=lambda c: f"{c.dtype}{c.shape}",
)
def test_one_column_predictions_are_the_bytes_of_the_per_record_answer(column):
    """`encode_predictions` writes the column whole: the same bytes as one dict per record."""
    expected = codecs.encode([{"action": v} for v in column.tolist()], codecs.JSON, codecs.Decoded([], len(column)))
    assert codecs.encode_predictions("action", column) == expected


@pytest.mark.parametrize(
    "column",
    [
        np.array([4, 0, 1, 3], dtype=np.int64),
        np.array([-3, 2], dtype=np.int8),
        np.array([7, 255], dtype=np.uint8),
        np.array([2**32 - 1], dtype=np.uint32),
        np.array([0.1, -1e-40, 3.4e38, np.nan, np.inf], dtype=np.float32),
        np.array([1.04296875, -0.12854], dtype=np.float16),
        np.array([[0.1, 0.2, 0.3], [-1.5, 0.0, 2.0]], dtype=np.float32),
        np.array([[[1, 2], [3, 4]]], dtype=np.int32),
        np.array([[0.1, 0.2], [0.3, 0.4]])[:, ::-1],  # not C-contiguous
    ],
    ids=lambda c: f"{c.dtype}{c.shape}",
)
def test_npy_actions_are_the_bytes_of_the_per_record_answer(column):
    """`encode_npy_actions` writes the action array whole: the same bytes as the array rebuilt
    from one dict per record (dtype included: int64 and float64, as NumPy reads Python values)."""
    decoded = codecs.Decoded([], len(column))
    expected = codecs.encode([{"action": v, "action_prob": 1.0} for v in column.tolist()], codecs.NPY, decoded)
    assert codecs.encode_npy_actions(column) == expected
    assert np.load(io.BytesIO(expected)).dtype in (np.int64, np.float64)


def test_npy_actions_leave_other_arrays_to_encode():
    unsigned64 = np.array([2**63 + 1], dtype=np.uint64)
    for column in (np.zeros((3, 0)), np.array([True, False]), [1, 2], {"a": np.zeros(2)}, unsigned64):
        assert codecs.encode_npy_actions(column) is None


def test_one_column_predictions_leave_other_columns_to_encode():
    for column in (np.zeros((2, 2, 2)), np.array([True, False]), [1, 2], {"a": np.zeros(2)}, np.array(["a"])):
        assert codecs.encode_predictions("action", column) is None


def test_json_is_strict_and_answers_stay_valid_json():
    """NaN and Infinity are not JSON (RFC 8259): a 400 naming the body; a non-finite answer
    (e.g. a log-probability) is written as null, never as an invalid token."""
    for body in (b'{"instances": [[1, 2, NaN, 4]]}', b'{"observation": [Infinity, 0, 0, 0]}'):
        with pytest.raises(RequestError) as info:
            codecs.decode(body, codecs.JSON, {})
        assert info.value.status == 400 and "not valid JSON" in info.value.message
    out = codecs.encode([{"action": 1, "action_logp": float("-inf")}], codecs.JSON, codecs.Decoded([], 1))
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"invalid JSON token {c}")) == {
        "predictions": [{"action": 1, "action_logp": None}]
    }


def test_error_body():
    body = RequestError("bad", status=415, field="Content-Type", expected="application/json").to_dict()
    assert body == {
        "error": "UnsupportedMediaType",
        "message": "bad",
        "field": "Content-Type",
        "expected": "application/json",
    }
