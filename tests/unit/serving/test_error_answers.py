"""The error bodies both transports answer, built in `protocol`: the router's 404 and 405 and a
500 for an unexpected exception. The two transports are compared over HTTP in
tests/integration/test_request_limits.py."""

import json
from types import SimpleNamespace

import pytest

from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.serving.protocol import (
    ROUTE_ERRORS,
    http_error_answer,
    internal_error_answer,
)

NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually please check your spelling "
    "and try again."
)


def test_the_routers_404_and_405_have_the_same_words_whatever_the_framework_says():
    assert http_error_answer(404, "Not Found", "Not Found") == (
        404,
        "application/json",
        json.dumps({"error": "NotFound", "message": NOT_FOUND}).encode(),
    )
    status, mimetype, body = http_error_answer(405, message="Method Not Allowed")
    assert (status, mimetype, json.loads(body)) == (
        405,
        "application/json",
        {"error": "MethodNotAllowed", "message": "The method is not allowed for the requested URL."},
    )


def test_another_http_error_keeps_the_frameworks_name_and_message_or_the_status_phrase():
    assert json.loads(http_error_answer(400, "BadRequest", "The browser sent junk.")[2]) == {
        "error": "BadRequest",
        "message": "The browser sent junk.",
    }
    assert json.loads(http_error_answer(503)[2]) == {"error": "ServiceUnavailable", "message": "Service Unavailable"}
    assert json.loads(http_error_answer(599)[2]) == {"error": "Error", "message": "Error"}


def test_an_unexpected_exception_is_a_500_naming_it():
    assert internal_error_answer(ValueError("boom")) == (
        500,
        "application/json",
        b'{"error": "InternalServerError", "message": "ValueError: boom"}',
    )


@pytest.mark.parametrize("status", sorted(ROUTE_ERRORS))
def test_the_flask_app_answers_its_routers_errors_with_protocols_bodies(status):
    from sagemaker_ray_rl.serving.flask_app import create_app

    client = create_app(SimpleNamespace(engines={"default_policy": "torch"}), ServingSettings()).test_client()
    response = client.get("/nope") if status == 404 else client.get("/invocations")
    assert (response.status_code, response.mimetype, response.get_data()) == http_error_answer(status)
