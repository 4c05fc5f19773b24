"""The error bodies both transports answer, built in `protocol`: the router's 404 and 405, a 500
for an unexpected exception, and `compute_jobs_apart`, which keeps a policy's exception with the job
that causes it when the jobs of several requests run together (Ray Serve's ``@serve.batch``).
The two transports are compared over HTTP in tests/integration/test_request_limits.py."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.serving.protocol import (
    ROUTE_ERRORS,
    Job,
    compute_jobs_apart,
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


class FaultyPolicy:
    """`Policy.compute`'s contract: doubles the observations; raises RuntimeError for a negative
    one, a RequestError for an observation of 99."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def compute(self, observations, **options):
        self.calls.append(observations.tolist())
        if (observations < 0).any():
            raise RuntimeError(f"negative observation in {observations.tolist()}")
        if (observations == 99).any():
            raise RequestError("99 is not allowed")
        return {"action": observations * 2}


def job(*observations: float) -> Job:
    return Job("default_policy", np.array(observations, dtype=np.float32), len(observations), False, (), None, [])


def test_jobs_that_run_together_without_an_exception_share_one_pass():
    policy = FaultyPolicy()
    answers = compute_jobs_apart(policy, [job(1), job(2, 3)])
    assert policy.calls == [[1, 2, 3]]
    assert [a["action"].tolist() for a in answers] == [[2], [4, 6]]


def test_a_policys_exception_becomes_the_answer_of_the_job_that_causes_it_only():
    policy = FaultyPolicy()
    answers = compute_jobs_apart(policy, [job(1), job(-1, 2), job(99), job(3)])
    assert policy.calls[0] == [1, -1, 2, 99, 3]  # together first, then each alone
    assert policy.calls[1:] == [[1], [-1, 2], [99], [3]]
    assert answers[0]["action"].tolist() == [2] and answers[3]["action"].tolist() == [6]
    assert isinstance(answers[1], RuntimeError) and str(answers[1]) == "negative observation in [-1.0, 2.0]"
    assert isinstance(answers[2], RequestError)


def test_a_job_alone_gets_its_exception_as_its_answer():
    assert isinstance(compute_jobs_apart(FaultyPolicy(), [job(-1)])[0], RuntimeError)
