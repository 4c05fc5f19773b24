"""The master's driver connects again while the head's raylet registers (`launcher._connect_driver`)."""

from __future__ import annotations

import time

import pytest
import ray

from sagemaker_ray_rl.cluster import launcher
from sagemaker_ray_rl.contract.errors import ClusterError


class FakeHead:
    def __init__(self, running: bool = True) -> None:
        self._running = running

    def running(self) -> bool:
        return self._running

    def output_tail(self) -> str:
        return "raylet log tail"


@pytest.fixture
def calls(monkeypatch):
    calls = {"init": 0, "shutdown": 0}
    monkeypatch.setattr(launcher, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1))
    return calls


def failing_init(calls: dict, failures: int):
    def init(**kwargs):
        calls["init"] += 1
        if calls["init"] <= failures:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    return init


def test_a_head_not_ready_yet_is_tried_again_until_it_is(monkeypatch, calls):
    monkeypatch.setattr(ray, "init", failing_init(calls, failures=2))
    launcher._connect_driver("10.0.0.1:6379", FakeHead(), deadline=time.monotonic() + 10)
    assert calls == {"init": 3, "shutdown": 2}


def test_past_the_deadline_the_error_names_the_address_and_rays_error(monkeypatch, calls):
    monkeypatch.setattr(ray, "init", failing_init(calls, failures=10**6))
    with pytest.raises(ClusterError, match=r"10\.0\.0\.1:6379 \(head running: True\): Failed to connect"):
        launcher._connect_driver("10.0.0.1:6379", FakeHead(), deadline=time.monotonic() + 0.05)


def test_a_head_that_exited_is_not_waited_for(monkeypatch, calls):
    monkeypatch.setattr(ray, "init", failing_init(calls, failures=10**6))
    with pytest.raises(ClusterError, match="head running: False"):
        launcher._connect_driver("10.0.0.1:6379", FakeHead(running=False), deadline=time.monotonic() + 60)
    assert calls["init"] == 1
