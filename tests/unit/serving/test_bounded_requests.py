"""`gunicorn_app.BoundedRequests`: a request that waits cooperatively past its time is answered
504 (body read) as JSON; one in time passes through; another greenlet's timeout is not taken for
the request's own (real gevent; the 408 of a body that stops arriving is tested over HTTP in
tests/integration/test_gunicorn_faults.py)."""

from __future__ import annotations

import io
import json

import gevent
import pytest

from sagemaker_ray_rl.serving.gunicorn_app import BoundedRequests


def call(app, body: bytes = b"{}") -> tuple[str, dict, bytes]:
    answer: dict = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=dict(headers))

    environ = {"wsgi.input": io.BytesIO(body), "REQUEST_METHOD": "POST"}
    chunks = app(environ, start_response)
    return answer["status"], answer["headers"], b"".join(chunks)


def reads_then_waits(wait_s: float):
    def app(environ, start_response):
        body = environ["wsgi.input"].read(-1)
        gevent.sleep(wait_s)  # e.g. its batch behind other greenlets' forward passes
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return app


def test_a_request_waiting_past_its_time_is_a_504_naming_the_variable():
    status, headers, body = call(BoundedRequests(reads_then_waits(5), timeout_s=0.05))
    assert status.startswith("504")
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)
    assert error["error"] == "GatewayTimeout"
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT=0.05" in error["message"]


def test_a_request_in_time_passes_through():
    assert call(BoundedRequests(reads_then_waits(0), timeout_s=5), b'{"a": 1}') == (
        "200 OK",
        {"Content-Type": "application/json"},
        b'{"a": 1}',
    )


def test_a_timeout_that_is_not_the_requests_own_propagates():
    def app(environ, start_response):
        with gevent.Timeout(0.01):  # the app's own bound on something
            gevent.sleep(1)

    with pytest.raises(gevent.Timeout):
        call(BoundedRequests(app, timeout_s=5))
