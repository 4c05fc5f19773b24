"""scripts/publish.sh against stand-ins that speak the real protocols: moto's server for the ECR
API (the real AWS CLI calls it: describe/create repository, authorization token) and Debian's
docker-registry (the Docker Registry HTTP API v2 that ECR serves) on loopback, where Docker pushes
without TLS. The image pushed is the real one, with its version and latest tags.

Needs ``scripts/ensure-tools.sh publish`` (``.venv-tools`` with the AWS CLI and moto, and the
docker-registry package); scripts/test.sh runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from container.conftest import docker, docker_cli
from devtools import free_port

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".venv-tools" / "bin"


def need(path: str | None, what: str) -> str:
    if not path or not os.path.exists(path):
        message = f"{what} is missing: scripts/ensure-tools.sh publish installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on a free loopback port, storage in a temp dir; yields host:port."""
    binary = need(shutil.which("docker-registry"), "docker-registry")
    base = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/v2/", proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ecr_api():
    """moto's server (ECR API) on a free loopback port; yields its URL."""
    binary = need(str(TOOLS / "moto_server"), ".venv-tools (moto)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def aws_env(ecr_api: str, registry: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL_ECR=ecr_api,  # the AWS CLI's own per-service endpoint setting
        AWS=str(TOOLS / "aws"),
        REGISTRY=registry,
        ECR_REPOSITORY="smrl-release-publish-test",
        DOCKER=docker_cli(),
    )
    return env


def publish(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "scripts" / "publish.sh"), *args], capture_output=True, text=True, env=env, timeout=900
    )


def test_publish_creates_the_repository_and_pushes_every_tag(image: str, registry: str, ecr_api: str):
    env = aws_env(ecr_api, registry)
    name = image.rsplit(":", 1)[0]
    latest = f"{name}:latest-cpu"
    assert docker("image", "inspect", latest).returncode == 0, f"scripts/build.sh tags {latest} too"
    repository = f"{registry}/smrl-release-publish-test"
    pushed_refs = []
    try:
        # --login alone (buildspec pre_build): the repository is created, Docker logs in.
        login = publish(env, "--login")
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == repository
        assert "created ECR repository smrl-release-publish-test" in login.stderr

        # The ECR API now has the repository, as the real CLI sees it.
        described = subprocess.run(
            [env["AWS"], "ecr", "describe-repositories", "--repository-names", "smrl-release-publish-test"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        [repo] = json.loads(described.stdout)["repositories"]
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}

        # Push both tags; the repository is found this time, not created again.
        run = publish(env, image, latest)
        assert run.returncode == 0, run.stderr
        assert "ECR repository smrl-release-publish-test exists" in run.stderr
        pushed_refs = run.stdout.split()
        tag = image.rsplit(":", 1)[1]
        assert pushed_refs == [f"{repository}:{tag}", f"{repository}:latest-cpu"]

        # The registry holds both tags, pointing at the same manifest, which is the local image's.
        base = f"http://{registry}/v2/smrl-release-publish-test"
        assert sorted(requests.get(f"{base}/tags/list", timeout=10).json()["tags"]) == sorted([tag, "latest-cpu"])
        accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
        digests = {
            t: requests.head(f"{base}/manifests/{t}", headers=accept, timeout=10).headers["Docker-Content-Digest"]
            for t in (tag, "latest-cpu")
        }
        assert digests[tag] == digests["latest-cpu"]
        repo_digests = json.loads(docker("image", "inspect", "-f", "{{json .RepoDigests}}", image).stdout)
        assert f"{repository}@{digests[tag]}" in repo_digests
        # The config blob the registry serves is the image's (labels included).
        manifest = requests.get(f"{base}/manifests/{tag}", headers=accept, timeout=10).json()
        config = requests.get(f"{base}/blobs/{manifest['config']['digest']}", timeout=10).json()
        assert config["config"]["Labels"]["com.sagemaker-ray-rl.ray-version"] == "2.60.0"
    finally:
        if pushed_refs:
            docker("rmi", *pushed_refs)
        docker("logout", registry)  # publish.sh's login left the stand-in's token in ~/.docker
