"""Request body and record limits of the real `serve` command over HTTP, both backends (gunicorn
and Ray Serve).

Bodies are sent with ``Content-Length`` and chunked (``Transfer-Encoding: chunked``), in JSON,
JSON Lines and CSV, sized to the byte around ``SAGEMAKER_MAX_PAYLOAD_IN_MB``: at the limit every
record is answered, one byte over is a 413 whose JSON body the client reads, and the server goes
on serving. Nothing over the limit may be cut short and answered 200 with fewer records.
"""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from integration.conftest import ServeProcess

pytestmark = pytest.mark.integration

LIMIT_MB = 1
LIMIT = LIMIT_MB * 1024 * 1024
MAX_RECORDS = 50_000
OBSERVATION = [0.01, -0.02, 0.03, 0.04]


@pytest.fixture(scope="module")
def cartpole(policy_dirs) -> Path:
    return policy_dirs["cartpole"]


@pytest.fixture(scope="module", params=["gunicorn", "ray-serve"])
def server(request, cartpole, tmp_path_factory) -> Iterator[ServeProcess]:
    """`serve` with each backend for a CartPole policy, a 1 MB payload limit and a 50,000-record
    limit."""
    env = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(LIMIT_MB), "SAGEMAKER_RAY_RL_MAX_RECORDS": str(MAX_RECORDS)}
    ray_tmp = None
    if request.param == "ray-serve":
        ray_tmp = Path(tempfile.mkdtemp(prefix="smrl-rs-", dir="/tmp"))  # Ray's socket paths must stay short
        env.update(SAGEMAKER_RAY_RL_SERVER="ray-serve", RAY_TMPDIR=str(ray_tmp))
    process = ServeProcess(cartpole, tmp_path_factory.mktemp("serve"), **env)
    try:
        process.wait_until_healthy(timeout=180)
        yield process
    finally:
        code = process.stop()
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        assert code == 0, process.log.read_text()[-3000:]


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
