"""Request body and record limits of the real `serve` command over HTTP, both servers (gunicorn
and Ray Serve), and every error answer of the two side by side.

Bodies are sent with ``Content-Length`` and chunked (``Transfer-Encoding: chunked``), in JSON,
JSON Lines and CSV, sized to the byte around ``SAGEMAKER_MAX_PAYLOAD_IN_MB``: at the limit every
record is answered, one byte over is a 413 whose JSON body the client reads, and the server goes
on serving. Nothing over the limit may be cut short and answered 200 with fewer records.

Errors (404, 405, 413, 415, 406, 400 and 500 from a policy that raises) go to a gunicorn and a Ray
Serve server of the same model: the status, content type and JSON body must be equal, and equal
to the expected one. The model is the CartPole policy with its module's class swapped for
`faulty_module.FaultyPPOModule` (same weights, same answers), whose forward pass raises for a
cart beyond the track's edge: an exception in the policy, which no request of the fuzz test can
cause in a trained module.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from integration.conftest import ServeProcess

pytestmark = pytest.mark.integration

LIMIT_MB = 1
LIMIT = LIMIT_MB * 1024 * 1024
MAX_RECORDS = 50_000
OBSERVATION = [0.01, -0.02, 0.03, 0.04]
#: An observation the space holds (x in [-4.8, 4.8]) that makes `FaultyPPOModule` raise.
OFF_TRACK = [3.0, 0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def cartpole(policy_dirs) -> Path:
    return policy_dirs["cartpole"]


@pytest.fixture(scope="module")
def faulty_cartpole(cartpole, tmp_path_factory) -> Path:
    """A copy of the CartPole checkpoint whose module is a `faulty_module.FaultyPPOModule` with the
    trained weights (built here, no training; the servers import the class from tests/integration,
    which `start_server` puts on their ``PYTHONPATH``)."""
    from faulty_module import FaultyPPOModule
    from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
    from ray.rllib.core.rl_module.rl_module import RLModule

    model_dir = tmp_path_factory.mktemp("faulty") / "cartpole"
    shutil.copytree(cartpole, model_dir)
    module_dir = model_dir / "learner_group" / "learner" / "rl_module" / "default_policy"
    trained = RLModule.from_checkpoint(str(module_dir))
    faulty = FaultyPPOModule(
        observation_space=trained.observation_space,
        action_space=trained.action_space,
        inference_only=False,
        model_config=trained.model_config,
        catalog_class=PPOCatalog,
    )
    faulty.set_state(trained.get_state())
    shutil.rmtree(module_dir)
    faulty.save_to_path(str(module_dir))
    return model_dir


def start_server(kind: str, model_dir: Path, tmp: Path) -> Iterator[ServeProcess]:
    """`serve` with server `kind` for `model_dir`, a 1 MB payload limit and a 50,000-record limit;
    `faulty_module` importable (``PYTHONPATH``, absolute: Ray's workers may run elsewhere). Ray
    Serve batches requests that arrive within 50 ms."""
    path = [
        str(Path(__file__).parent),
        *(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p),
    ]
    env = {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(LIMIT_MB),
        "SAGEMAKER_RAY_RL_MAX_RECORDS": str(MAX_RECORDS),
        "PYTHONPATH": os.pathsep.join(path),
    }
    ray_tmp = None
    if kind == "ray-serve":
        ray_tmp = Path(tempfile.mkdtemp(prefix="smrl-rs-", dir="/tmp"))  # Ray's socket paths must stay short
        env.update(
            SAGEMAKER_RAY_RL_SERVER="ray-serve",
            SAGEMAKER_RAY_SERVE_BATCH_WAIT_TIMEOUT_S="0.05",
            RAY_TMPDIR=str(ray_tmp),
        )
    process = ServeProcess(model_dir, tmp, **env)
    try:
        process.wait_until_healthy(timeout=180)
        yield process
    finally:
        code = process.stop()
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert code == 0, process.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def gunicorn(faulty_cartpole, tmp_path_factory) -> Iterator[ServeProcess]:
    yield from start_server("gunicorn", faulty_cartpole, tmp_path_factory.mktemp("serve-gunicorn"))


@pytest.fixture(scope="module")
def ray_serve(faulty_cartpole, tmp_path_factory) -> Iterator[ServeProcess]:
    yield from start_server("ray-serve", faulty_cartpole, tmp_path_factory.mktemp("serve-ray-serve"))


@pytest.fixture(scope="module", params=["gunicorn", "ray-serve"])
def server(request) -> ServeProcess:
    """Each server in turn (started once for the module: the side-by-side tests use both)."""
    return request.getfixturevalue(request.param.replace("-", "_"))


def body_of(content_type: str, size: int, record: list[float] = OBSERVATION) -> tuple[bytes, int]:
    """A valid body of exactly `size` bytes in `content_type` and the number of records in it:
    as many records as fit, padded with whitespace the format ignores."""
    if content_type == "application/json":
        item = json.dumps(record).encode()
        head, tail = b'{"instances": [', b"]}"
        count = (size - len(head) - len(tail) + 1) // (len(item) + 1)
        body = head + b",".join([item] * count)
        return body + b" " * (size - len(body) - len(tail)) + tail, count
    line = (json.dumps(record) if content_type == "application/jsonlines" else ",".join(map(str, record))) + "\n"
    count = size // len(line)
    body = line.encode() * count
    return body + b"\n" * (size - len(body)), count


def post(
    server: ServeProcess, body: bytes, content_type: str, *, chunked: bool, chunk: int = 10_000, **headers: str
) -> tuple[int, bytes]:
    """POST /invocations on a new connection; chunked bodies go in `chunk`-byte chunks."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        if chunked:
            parts = (body[i : i + chunk] for i in range(0, len(body), chunk))
            connection.request(
                "POST",
                "/invocations",
                body=parts,
                headers={"Content-Type": content_type, **headers},
                encode_chunked=True,
            )
        else:
            connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type, **headers})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def answers(content_type: str, body: bytes) -> int:
    if content_type == "application/json":
        return len(json.loads(body)["predictions"])
    return len(body.splitlines())


CONTENT_TYPES = ["application/json", "application/jsonlines", "text/csv"]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_a_body_exactly_at_the_limit_gets_every_record_answered(server, content_type, chunked):
    body, count = body_of(content_type, LIMIT)
    assert len(body) == LIMIT
    status, answer = post(server, body, content_type, chunked=chunked)
    assert status == 200, answer[:300]
    assert answers(content_type, answer) == count


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_one_byte_over_the_limit_is_a_413_the_client_reads(server, content_type, chunked):
    body, _ = body_of(content_type, LIMIT + 1)
    status, answer = post(server, body, content_type, chunked=chunked)
    assert status == 413, answer[:300]
    error = json.loads(answer)
    assert error["error"] == "PayloadTooLarge"
    assert f"request body is {LIMIT + 1} bytes" in error["message"]
    assert f"SAGEMAKER_MAX_PAYLOAD_IN_MB={LIMIT_MB}" in error["message"]
    assert error["expected"].startswith(f"a body of at most {LIMIT} bytes")
    small, count = body_of(content_type, 1000)
    status, answer = post(server, small, content_type, chunked=chunked)
    assert status == 200 and answers(content_type, answer) == count


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_a_7_mb_body_gets_a_413_not_a_reset_connection(server, chunked, connection):
    body, _ = body_of("application/json", 7 * 1024 * 1024)
    status, answer = post(server, body, "application/json", chunked=chunked, chunk=65536, Connection=connection)
    assert status == 413
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in json.loads(answer)["message"]


def test_a_keep_alive_connection_serves_on_after_a_413(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        big, _ = body_of("application/jsonlines", 2 * LIMIT)
        small, count = body_of("application/jsonlines", 1000)
        for body, status, records in [(big, 413, None), (small, 200, count), (big, 413, None), (small, 200, count)]:
            connection.request(
                "POST",
                "/invocations",
                body=(big[i : i + 65536] for i in range(0, len(body), 65536)) if body is big else body,
                headers={"Content-Type": "application/jsonlines"},
                encode_chunked=body is big,
            )
            response = connection.getresponse()
            answer = response.read()
            assert response.status == status, answer[:300]
            if records is not None:
                assert answers("application/jsonlines", answer) == records
    finally:
        connection.close()


def records_body(content_type: str, count: int) -> bytes:
    """`count` CartPole observations of zeros (short records: many fit under the byte limit)."""
    if content_type == "application/json":
        return json.dumps({"instances": [[0, 0, 0, 0]] * count}).encode()
    line = "[0, 0, 0, 0]\n" if content_type == "application/jsonlines" else "0,0,0,0\n"
    return (line * count).encode()


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_more_records_than_the_record_limit_is_its_own_413(server, content_type):
    body = records_body(content_type, MAX_RECORDS + 1)
    assert len(body) < LIMIT
    status, answer = post(server, body, content_type, chunked=True)
    assert status == 413, answer[:300]
    error = json.loads(answer)
    assert error["message"] == (
        f"request has {MAX_RECORDS + 1} records, more than SAGEMAKER_RAY_RL_MAX_RECORDS={MAX_RECORDS} allows"
    )
    assert error["expected"].startswith(f"at most {MAX_RECORDS} records")
    status, answer = post(server, records_body(content_type, MAX_RECORDS), content_type, chunked=True)
    assert status == 200 and answers(content_type, answer) == MAX_RECORDS


@pytest.fixture(scope="module")
def mme_server(cartpole, tmp_path_factory) -> Iterator[ServeProcess]:
    """A multi-model endpoint (gunicorn) with the CartPole policy loaded as ``cp``, same limits."""
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(LIMIT_MB), "SAGEMAKER_MULTI_MODEL": "true"}
    process = ServeProcess(tmp_path_factory.mktemp("no-model"), tmp_path_factory.mktemp("serve-mme"), **env)
    try:
        process.wait_until_healthy(timeout=180)
        load = requests.post(f"{process.url}/models", json={"model_name": "cp", "url": str(cartpole)}, timeout=120)
        assert load.status_code == 200, load.text
        yield process
    finally:
        assert process.stop() == 0, process.log.read_text()[-3000:]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_multi_model_invocations_get_the_same_body_limits(mme_server, chunked):
    target = {"X-Amzn-SageMaker-Target-Model": "cp"}
    body, count = body_of("application/jsonlines", LIMIT)
    status, answer = post(mme_server, body, "application/jsonlines", chunked=chunked, **target)
    assert status == 200 and answers("application/jsonlines", answer) == count
    body, _ = body_of("application/jsonlines", LIMIT + 1)
    status, answer = post(mme_server, body, "application/jsonlines", chunked=chunked, **target)
    assert status == 413, answer[:300]
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in json.loads(answer)["message"]


JSON = {"Content-Type": "application/json"}
TYPES = "application/json or application/jsonlines or text/csv or application/x-npy"
NOT_FOUND = {
    "error": "NotFound",
    "message": "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again.",
}
METHOD_NOT_ALLOWED = {"error": "MethodNotAllowed", "message": "The method is not allowed for the requested URL."}
OFF_TRACK_500 = {"error": "InternalServerError", "message": "OffTrackError: cart position 3 is off the track"}


def call(server: ServeProcess, method: str, path: str, body: bytes | None = None, headers=None) -> tuple:
    """``(status, Content-Type, body parsed as JSON)`` of one request on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        answer = response.read()
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = answer  # not JSON: compared (and shown) as bytes
        return response.status, response.getheader("Content-Type"), parsed
    finally:
        connection.close()


ERRORS = [
    pytest.param("GET", "/nope", None, {}, 404, NOT_FOUND, id="404-GET-unknown-path"),
    pytest.param("POST", "/nope", b"{}", JSON, 404, NOT_FOUND, id="404-POST-unknown-path"),
    pytest.param("GET", "/ping/", None, {}, 404, NOT_FOUND, id="404-trailing-slash"),
    pytest.param("POST", "/invocations/", b"{}", JSON, 404, NOT_FOUND, id="404-invocations-trailing-slash"),
    pytest.param("GET", "/invocations", None, {}, 405, METHOD_NOT_ALLOWED, id="405-GET-invocations"),
    pytest.param("PUT", "/invocations", b"{}", JSON, 405, METHOD_NOT_ALLOWED, id="405-PUT-invocations"),
    pytest.param("POST", "/ping", b"{}", JSON, 405, METHOD_NOT_ALLOWED, id="405-POST-ping"),
    pytest.param("DELETE", "/execution-parameters", None, {}, 405, METHOD_NOT_ALLOWED, id="405-DELETE-parameters"),
    pytest.param(
        "POST",
        "/invocations",
        body_of("application/json", LIMIT + 1)[0],
        JSON,
        413,
        {
            "error": "PayloadTooLarge",
            "message": f"request body is {LIMIT + 1} bytes, more than SAGEMAKER_MAX_PAYLOAD_IN_MB={LIMIT_MB} allows",
            "expected": f"a body of at most {LIMIT} bytes; send fewer records per request",
        },
        id="413-body-over-the-limit",
    ),
    pytest.param(
        "POST",
        "/invocations",
        b"0.01,-0.02,0.03,0.04",
        {"Content-Type": "text/plain"},
        415,
        {
            "error": "UnsupportedMediaType",
            "message": "unsupported Content-Type 'text/plain'",
            "field": "Content-Type",
            "expected": TYPES,
        },
        id="415-text-plain",
    ),
    pytest.param(
        "POST",
        "/invocations",
        json.dumps({"observation": OBSERVATION}).encode(),
        {**JSON, "Accept": "text/html"},
        406,
        {"error": "NotAcceptable", "message": "cannot answer in 'text/html'", "field": "Accept", "expected": TYPES},
        id="406-accept-text-html",
    ),
    pytest.param(
        "POST",
        "/invocations",
        json.dumps({"instances": [OBSERVATION, [1, 2, 3]]}).encode(),
        JSON,
        400,
        {
            "error": "BadRequest",
            "message": "observation has shape (3,), the policy expects (4,)",
            "field": "instances[1]",
            "expected": "a list of 4 numbers (shape (4,), float32)",
        },
        id="400-wrong-shape",
    ),
    pytest.param(
        "POST", "/invocations", json.dumps({"observation": OFF_TRACK}).encode(), JSON, 500, OFF_TRACK_500, id="500-json"
    ),
    pytest.param(
        "POST",
        "/invocations",
        json.dumps({"instances": [OBSERVATION, OFF_TRACK]}).encode(),
        JSON,
        500,
        OFF_TRACK_500,
        id="500-one-of-two-instances",
    ),
    pytest.param(
        "POST", "/invocations", b"3,0,0,0\n", {"Content-Type": "text/csv"}, 500, OFF_TRACK_500, id="500-csv-row"
    ),
]


@pytest.mark.parametrize("method, path, body, headers, status, expected", ERRORS)
def test_both_servers_answer_an_error_with_the_same_status_and_json_body(
    gunicorn, ray_serve, method, path, body, headers, status, expected
):
    answers = {
        name: call(s, method, path, body, headers) for name, s in [("gunicorn", gunicorn), ("ray-serve", ray_serve)]
    }
    assert answers["ray-serve"] == answers["gunicorn"]
    assert answers["gunicorn"] == (status, "application/json", expected)
    for s in (gunicorn, ray_serve):  # and both go on serving
        assert call(s, "POST", "/invocations", json.dumps({"observation": OBSERVATION}).encode(), JSON)[0] == 200


def test_a_request_that_makes_the_policy_raise_fails_alone_among_concurrent_ones(gunicorn, ray_serve):
    """Ray Serve batches these 16 requests (``@serve.batch``, 50 ms): only the one whose
    observation makes the policy raise gets the 500, the others their own answers, as gunicorn
    answers each of them alone."""
    bodies = [json.dumps({"observation": [0.2 * i - 1.5, 0.0, 0.01 * i - 0.08, 0.0]}).encode() for i in range(16)]
    bodies[5] = json.dumps({"observation": OFF_TRACK}).encode()
    with ThreadPoolExecutor(len(bodies)) as pool:
        concurrent = list(pool.map(lambda b: call(ray_serve, "POST", "/invocations", b, JSON), bodies))
    alone = [call(gunicorn, "POST", "/invocations", b, JSON) for b in bodies]
    assert concurrent == alone
    assert [answer[0] for answer in alone] == [200] * 5 + [500] + [200] * 10
    for s in (gunicorn, ray_serve):  # the traceback is in the server's log (Ray's: forwarded to the driver)
        deadline = time.monotonic() + 10
        while (
            "OffTrackError: cart position 3 is off the track" not in s.log.read_text() and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        log = s.log.read_text()
        assert "unexpected error answering POST /invocations" in log and "Traceback" in log, log[-3000:]
        assert "OffTrackError: cart position 3 is off the track" in log, log[-3000:]
