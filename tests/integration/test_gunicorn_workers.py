"""gunicorn under `serve`: workers are recycled after SAGEMAKER_RAY_RL_MAX_REQUESTS requests without
failing a request, and no control socket is opened."""

from __future__ import annotations

import re
import time

import pytest
import requests
from helpers import train_policies
from integration.conftest import ServeProcess

pytestmark = pytest.mark.integration

OBSERVATION = [0.01, -0.02, 0.03, 0.04]


def test_workers_are_recycled_without_a_failed_request_and_there_is_no_control_socket(tmp_path_factory):
    policy = train_policies(tmp_path_factory.mktemp("policies"), ["cartpole"])["cartpole"]
    home = tmp_path_factory.mktemp("home")
    runtime = tmp_path_factory.mktemp("runtime")
    server = ServeProcess(
        policy,
        tmp_path_factory.mktemp("serve"),
        SAGEMAKER_RAY_RL_MAX_REQUESTS="20",
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        HOME=str(home),
        XDG_RUNTIME_DIR=str(runtime),
    )
    try:
        server.wait_until_healthy()
        url = f"{server.url}/invocations"
        statuses = []
        # Paced over ~8 s: a worker past its limit stops taking connections within about a second.
        with requests.Session() as session:  # keep-alive: the recycled worker's last answer closes it
            for _ in range(100):
                statuses.append(session.post(url, json={"observation": OBSERVATION}, timeout=30).status_code)
                time.sleep(0.05)
        for _ in range(50):  # a new connection each
            statuses.append(requests.post(url, json={"observation": OBSERVATION}, timeout=30).status_code)
            time.sleep(0.05)
        assert statuses == [200] * 150
    finally:
        code = server.stop()
    log = server.log.read_text()
    assert code == 0, log[-3000:]
    # 150 requests over 2 workers recycled every 20-22 requests.
    assert log.count("Autorestarting worker after current request") >= 4, log[-3000:]
    assert len(re.findall(r"Booting worker with pid", log)) >= 2 + 3, log[-3000:]
    assert "Control socket" not in log
    assert not list(home.rglob("*.ctl")) and not list(runtime.rglob("*.ctl"))
