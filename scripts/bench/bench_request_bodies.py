"""Latency of ``POST /invocations`` for bodies at and far over ``SAGEMAKER_MAX_PAYLOAD_IN_MB=1``, sent
with ``Content-Length`` and chunked, against a running ``serve`` of a CartPole policy.

    SAGEMAKER_MAX_PAYLOAD_IN_MB=1 SAGEMAKER_MODEL_SERVER_WORKERS=1 SM_MODEL_DIR=MODEL serve &
    .venv/bin/python scripts/bench/bench_request_bodies.py --port 8080 --repeats 15

Prints, per body: the statuses seen and the median time from the first byte sent to the last byte
of the answer read (a fresh connection per request). At the limit (1 MiB of JSON Lines, 40,329
records) every record is answered; at 7 MiB the answer must be a 413 the client reads.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time

LINE = b"[0.01, -0.02, 0.03, 0.04]\n"
LIMIT = 1024 * 1024


def post(port: int, body: bytes, chunked: bool) -> tuple[int, float]:
    """One request on a new connection: (status, seconds)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/jsonlines"}
    started = time.perf_counter()
    if chunked:
        parts = (body[i : i + 65536] for i in range(0, len(body), 65536))
        connection.request("POST", "/invocations", body=parts, headers=headers, encode_chunked=True)
    else:
        connection.request("POST", "/invocations", body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    at_limit = LINE * (LIMIT // len(LINE))
    at_limit += b"\n" * (LIMIT - len(at_limit))
    seven = LINE * (7 * LIMIT // len(LINE))
    for name, body, chunked in [
        ("1 MiB (at the limit), Content-Length", at_limit, False),
        ("1 MiB (at the limit), chunked", at_limit, True),
        ("7 MiB, Content-Length", seven, False),
        ("7 MiB, chunked", seven, True),
    ]:
        post(args.port, body, chunked)  # warm-up
        runs = [post(args.port, body, chunked) for _ in range(args.repeats)]
        statuses = sorted({status for status, _ in runs})
        median_ms = 1000 * statistics.median(seconds for _, seconds in runs)
        print(f"{name}: status {statuses}, median {median_ms:.0f} ms")


if __name__ == "__main__":
    main()
