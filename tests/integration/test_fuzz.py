"""Property-based fuzzing of ``/invocations`` over real HTTP: no generated body or header may get
a 5xx or take a worker down, and ``/ping`` stays 200.

Bodies mix valid requests, near-valid ones (wrong shapes, types, keys, options) and junk (random
bytes, JSON of any shape, CSV and NPY garbage); headers mix every content type, Accept values and
custom attributes. Run against three servers: CartPole (Box observations), a Dict-observation
policy (nested decoding) and a multi-agent one (module ids, agent mapping).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

EXAMPLES = 1000

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 2]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
small = st.floats(-0.4, 0.4, allow_nan=False)
valid_observations = st.one_of(
    st.lists(small, min_size=4, max_size=4),
    st.fixed_dictionaries(
        {
            "x-pos": st.lists(small, min_size=1, max_size=1),
            "angular-pos": st.fixed_dictionaries({"value": small, "some_random_stuff": st.integers(0, 2)}),
            "velocs": st.tuples(st.lists(small, min_size=1, max_size=1), small).map(list),
        }
    ),
)
observations = st.one_of(
    valid_observations,
    valid_observations,
    st.lists(numbers, min_size=0, max_size=6),
    st.lists(st.lists(numbers, max_size=4), max_size=3),
    st.fixed_dictionaries(
        {
            "x-pos": st.lists(numbers, max_size=2),
            "angular-pos": st.fixed_dictionaries({"value": numbers, "some_random_stuff": numbers}),
            "velocs": st.lists(st.one_of(numbers, st.lists(numbers, max_size=2)), max_size=3),
        }
    ),
    json_values,
)
options = st.fixed_dictionaries(
    {},
    optional={
        "explore": st.one_of(st.booleans(), json_values),
        "outputs": st.one_of(
            st.lists(
                st.sampled_from(["action_prob", "action_logp", "action_dist_inputs", "vf_preds", "x"]), max_size=4
            ),
            json_values,
        ),
        "module_id": st.one_of(st.sampled_from(["default_policy", "p0", "nope"]), json_values),
        "state": json_values,
    },
)


@st.composite
def json_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["instances", "observation", "inputs", "agents", "any"]))
    if kind == "instances":
        payload = {"instances": draw(st.lists(observations, min_size=0, max_size=4)), **draw(options)}
    elif kind == "observation":
        payload = {"observation": draw(observations), **draw(options)}
    elif kind == "agents":
        payload = {
            "agents": draw(st.dictionaries(st.sampled_from(["0", "1", "7", "a"]), observations, max_size=3)),
            **draw(options),
        }
    elif kind == "inputs":
        payload = {"inputs": {"observations": draw(st.lists(observations, max_size=3)), "prev_action": [0]}}
    else:
        payload = draw(json_values)
    return json.dumps(payload).encode()


@st.composite
def npy_bodies(draw) -> bytes:
    shape = draw(st.lists(st.integers(0, 5), max_size=3))
    dtype = draw(st.sampled_from(["float32", "float64", "int64", "bool", "U3", "complex64"]))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype=dtype))
    data = buffer.getvalue()
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut]
    return data


bodies = st.one_of(
    json_bodies(),
    json_bodies().map(lambda b: b + b"\n" + b),
    st.lists(observations, max_size=4).map(lambda obs: "\n".join(json.dumps(o) for o in obs).encode()),
    st.lists(st.lists(st.one_of(numbers.map(str), st.text(max_size=4)), max_size=5), max_size=4).map(
        lambda rows: "\n".join(",".join(r) for r in rows).encode()
    ),
    npy_bodies(),
    st.binary(max_size=200),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(
            [
                "application/json",
                "application/jsonlines",
                "text/csv",
                "application/x-npy",
                "text/plain",
                "application/json; charset=utf-8",
                "",
                "*/*",
                "application/x-jsonlines",
            ]
        ),
        "Accept": st.sampled_from(
            [
                "application/json",
                "application/jsonlines",
                "text/csv",
                "application/x-npy",
                "*/*",
                "text/html",
                "application/json;q=0",
                "text/csv;q=abc, */*",
                "",
            ]
        ),
        "X-Amzn-SageMaker-Custom-Attributes": st.one_of(
            st.sampled_from(
                ["explore=true", "explore=maybe", "outputs=vf_preds,action_prob", "module_id=p0", "=", ";;,"]
            ),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.strip),
        ),
    },
)


def valid_body(kind: str) -> bytes:
    """One request the policy of `kind` answers with 200: the fuzz always includes it, so the run
    proves both outcomes, whatever share of generated bodies happens to be valid."""
    cartpole = [0.01, -0.02, 0.03, 0.04]
    if kind == "dict_obs":
        from ray.rllib.examples.envs.classes.cartpole_with_dict_observation_space import (
            CartPoleWithDictObservationSpace,
        )

        observation, _ = CartPoleWithDictObservationSpace().reset(seed=0)
        as_json = json.loads(json.dumps(observation, default=lambda a: np.asarray(a).tolist()))
        return json.dumps({"instances": [as_json]}).encode()
    if kind == "multi_agent":
        return json.dumps({"agents": {"0": cartpole, "1": cartpole}}).encode()
    return json.dumps({"instances": [cartpole]}).encode()


@pytest.mark.parametrize("kind", ["cartpole", "dict_obs", "multi_agent"])
def test_no_request_gets_a_5xx(kind, servers):
    url = servers(kind).url
    session = requests.Session()
    statuses: dict[int, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies, header=headers)
    @example(body=valid_body(kind), header={"Content-Type": "application/json"})
    def check(body: bytes, header: dict) -> None:
        response = session.post(f"{url}/invocations", data=body, headers=header, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (body[:300], header, response.text[:500])
        if response.status_code >= 400:
            error = response.json()
            assert error["message"] and error["error"]

    check()
    print(f"{kind}: statuses {statuses}")
    assert statuses.get(200, 0) > 0 and sum(v for k, v in statuses.items() if 400 <= k < 500) > 0
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200
