"""`GreenBatcher`: the jobs of requests that are ready together run as one call, each request
gets its own answers, and an error stays with the request that causes it (real gevent
greenlets, as in gunicorn's gevent worker)."""

import gevent
import pytest

from sagemaker_ray_rl.serving.batching import GreenBatcher


class Recorder:
    """A `compute` that answers each job with its double and records the jobs of each call;
    a negative job raises."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, jobs: list[int]) -> list[int]:
        self.calls.append(list(jobs))
        if any(job < 0 for job in jobs):
            raise ValueError(f"negative job in {jobs}")
        return [2 * job for job in jobs]


def run_together(batcher: GreenBatcher, requests: list[list[int]]) -> list[gevent.Greenlet]:
    """Start one greenlet per request at the same moment (connections whose request is ready)
    and wait for all of them."""
    greenlets = [gevent.spawn(batcher, jobs) for jobs in requests]
    gevent.joinall(greenlets, timeout=10)
    assert all(g.ready() for g in greenlets)
    return greenlets


def test_requests_ready_together_share_one_call_and_get_their_own_answers():
    compute = Recorder()
    greenlets = run_together(GreenBatcher(compute, max_requests=32), [[1], [2, 3], [4], [5]])
    assert compute.calls == [[1, 2, 3, 4, 5]]
    assert [g.value for g in greenlets] == [[2], [4, 6], [8], [10]]


def test_a_request_alone_runs_alone_at_once():
    compute = Recorder()
    batcher = GreenBatcher(compute, max_requests=32)
    assert batcher([7]) == [14]
    assert batcher([8, 9]) == [16, 18]
    assert compute.calls == [[7], [8, 9]]


def test_calls_take_at_most_max_requests_requests():
    compute = Recorder()
    greenlets = run_together(GreenBatcher(compute, max_requests=2), [[1], [2], [3], [4], [5]])
    assert compute.calls == [[1, 2], [3, 4], [5]]
    assert [g.value for g in greenlets] == [[2], [4], [6], [8], [10]]


def test_an_error_goes_only_to_the_request_that_causes_it():
    compute = Recorder()
    greenlets = run_together(GreenBatcher(compute, max_requests=32), [[1], [-1, 2], [3]])
    assert compute.calls == [[1, -1, 2, 3], [1], [-1, 2], [3]]  # together, then each alone
    assert greenlets[0].value == [2] and greenlets[2].value == [6]
    assert isinstance(greenlets[1].exception, ValueError)


def test_requests_after_a_batch_form_the_next_one():
    compute = Recorder()
    batcher = GreenBatcher(compute, max_requests=32)
    run_together(batcher, [[1], [2]])
    run_together(batcher, [[3], [4], [5]])
    assert compute.calls == [[1, 2], [3, 4, 5]]


def test_max_requests_must_be_positive():
    with pytest.raises(ValueError, match="max_requests must be >= 1, got 0"):
        GreenBatcher(Recorder(), max_requests=0)


def test_a_leader_whose_timeout_fires_while_others_queue_still_runs_their_batch():
    compute = Recorder()
    batcher = GreenBatcher(compute, max_requests=32)
    lead = gevent.spawn(batcher, [1])
    others = [gevent.spawn(batcher, [job]) for job in (2, 3)]
    # The hub runs its callbacks in order: the leader starts and yields in its sleep(0), the
    # others queue, then its request's timeout fires (as a gevent.Timeout does: thrown from the hub).
    gevent.get_hub().loop.run_callback(lead.throw, gevent.Timeout())
    gevent.joinall([lead, *others], timeout=10)
    assert isinstance(lead.exception, gevent.Timeout)
    assert compute.calls == [[1, 2, 3]]
    assert [g.value for g in others] == [[4], [6]]
