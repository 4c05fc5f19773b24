"""`protocol.read_body` / `BodyCollector`: a body is read whole up to the payload limit, never kept
beyond it, and one byte over is a 413 naming the limit, with or without a Content-Length."""

from __future__ import annotations

import io

import pytest

from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.serving import protocol

SETTINGS = ServingSettings(max_payload_mb=1)
LIMIT = 1024 * 1024


class Stream:
    """A WSGI-like input stream over `size` bytes that records the largest read and the total read."""

    def __init__(self, size: int) -> None:
        self.remaining = size
        self.read_total = 0
        self.largest_read = 0

    def read(self, n: int) -> bytes:
        chunk = min(n, self.remaining, 7_000)  # short reads, as a socket gives
        self.remaining -= chunk
        self.read_total += chunk
        self.largest_read = max(self.largest_read, n)
        return b"x" * chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_at_the_limit_is_read_whole(declared):
    stream = Stream(LIMIT)
    body = protocol.read_body(stream.read, LIMIT if declared else None, SETTINGS)
    assert body == b"x" * LIMIT
    assert stream.largest_read <= protocol.READ_SIZE


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_one_byte_over_is_a_413_after_the_body_is_drained(declared):
    stream = Stream(LIMIT + 1)
    with pytest.raises(RequestError) as raised:
        protocol.read_body(stream.read, LIMIT + 1 if declared else None, SETTINGS)
    error = raised.value
    assert error.status == 413
    assert error.message.startswith(f"request body is {LIMIT + 1} bytes")
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB=1 allows" in error.message
    assert error.expected.startswith(f"a body of at most {LIMIT} bytes")
    assert stream.remaining == 0  # drained, so the client is not reset while it still sends


def test_an_endless_chunked_body_is_dropped_after_the_discard_limit():
    stream = Stream(10**12)
    with pytest.raises(RequestError, match=r"request body is more than \d+ bytes \(chunked\)") as raised:
        protocol.read_body(stream.read, None, SETTINGS)
    assert raised.value.status == 413
    assert stream.read_total <= LIMIT + protocol.DISCARD_LIMIT_BYTES + protocol.READ_SIZE


def test_the_collector_keeps_nothing_past_the_limit():
    collector = protocol.BodyCollector(SETTINGS)
    assert collector.add(b"a" * LIMIT)
    assert collector.add(b"b")  # over: counted, dropped, keep draining
    assert collector._parts == []
    assert collector.received == LIMIT + 1
    with pytest.raises(RequestError):
        collector.body()


def test_a_declared_length_over_the_limit_is_refused_without_keeping_anything():
    collector = protocol.BodyCollector(SETTINGS, content_length=7 * LIMIT)
    assert collector.too_large
    collector.add(b"a" * 1000)
    assert collector._parts == []
    with pytest.raises(RequestError, match=f"request body is {7 * LIMIT} bytes"):
        collector.body()


def test_a_wsgi_stream_without_a_length_reads_to_its_end():
    body = protocol.read_body(io.BytesIO(b"[1, 2, 3, 4]\n" * 3).read, None, SETTINGS)
    assert body == b"[1, 2, 3, 4]\n" * 3


@pytest.mark.parametrize(
    "max_records, refused", [(3, False), (2, True), (0, False)], ids=["at-limit", "over", "no-limit"]
)
def test_the_record_limit(max_records, refused):
    from sagemaker_ray_rl.serving import codecs

    decoded = codecs.decode(b"[1, 2, 3, 4]\n" * 3, codecs.JSONLINES, {})
    settings = ServingSettings(max_records=max_records)
    if not refused:
        protocol._check_records(decoded, settings)
        return
    with pytest.raises(RequestError, match="request has 3 records, more than SAGEMAKER_RAY_RL_MAX_RECORDS=2") as raised:
        protocol._check_records(decoded, settings)
    assert raised.value.status == 413
