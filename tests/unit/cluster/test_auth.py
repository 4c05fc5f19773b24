"""Ray token authentication of the job's cluster: which token, derived how, and the opt-out
(`sagemaker_ray_rl.cluster.auth`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from devtools import write_job

from sagemaker_ray_rl.checkpoint import redact_secrets
from sagemaker_ray_rl.cluster.auth import RayAuth, derive_token, resolve_auth
from sagemaker_ray_rl.cluster.settings import ClusterSettings
from sagemaker_ray_rl.contract.environment import Environment, ResourceConfig
from sagemaker_ray_rl.contract.errors import ClusterError, HyperparameterError

HOSTS = ["algo-1-ab3cd", "algo-2-xk9p2"]
HPS = {"env": "CartPole-v1", "lr": 0.001}


def host_dir(root: Path, host: str, hyperparameters: dict = HPS, indent: int | None = None) -> Path:
    """One host's /opt/ml, as SageMaker writes it: the same hyperparameters on every host, its own
    resourceconfig.json (current_host differs)."""
    base = write_job(root / host, hyperparameters, inputdataconfig={"train": {"TrainingInputMode": "File"}})
    config = base / "input" / "config"
    if indent is not None:  # the same JSON, other bytes
        text = json.loads((config / "hyperparameters.json").read_text())
        (config / "hyperparameters.json").write_text(json.dumps(dict(reversed(text.items())), indent=indent))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": HOSTS}))
    return base


def environment(base: Path, **env: str) -> Environment:
    return Environment.from_environ({"SAGEMAKER_BASE_DIR": str(base), **env})


def resolve(base: Path, hyperparameter: str | None = None, **env: str) -> RayAuth:
    return resolve_auth(environment(base), hyperparameter, env)


class TestDerivedToken:
    def test_every_host_derives_the_same_token(self, tmp_path):
        job = {"TRAINING_JOB_NAME": "ray-rl-2026-12-01", "TRAINING_JOB_ARN": "arn:aws:sagemaker:x:1:training-job/r"}
        tokens = {resolve(host_dir(tmp_path, h, indent=i), **job).file_token for i, h in enumerate(HOSTS)}
        assert len(tokens) == 1
        (token,) = tokens
        assert len(token) == 64 and int(token, 16) >= 0

    @pytest.mark.parametrize(
        "change",
        [
            {"hyperparameters": {**HPS, "lr": 0.002}},
            {"env": {"TRAINING_JOB_NAME": "another-job"}},
            {"env": {"TRAINING_JOB_ARN": "arn:aws:sagemaker:x:1:training-job/other"}},
            {"hosts": ["algo-1-ab3cd", "algo-2-zzzzz"]},
        ],
    )
    def test_another_job_derives_another_token(self, tmp_path, change):
        base = host_dir(tmp_path / "a", HOSTS[0])
        config = base / "input" / "config"
        token = derive_token(config, HOSTS, {})
        other = host_dir(tmp_path / "b", HOSTS[0], change.get("hyperparameters", HPS)) / "input" / "config"
        assert derive_token(other, change.get("hosts", HOSTS), change.get("env", {})) != token

    def test_the_token_file_is_private_and_named_for_ray(self, tmp_path):
        auth = resolve(host_dir(tmp_path, HOSTS[0]))
        path = tmp_path / "secret" / "ray_auth_token"
        env = auth.environment(path)
        assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}
        assert path.read_text() == auth.file_token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert auth.file_token not in repr(auth)

    def test_an_unwritable_token_file_fails_naming_it(self, tmp_path):
        auth = resolve(host_dir(tmp_path, HOSTS[0]))
        (tmp_path / "file").write_text("")
        with pytest.raises(ClusterError, match="could not write the Ray authentication token.*RAY_AUTH_TOKEN"):
            auth.environment(tmp_path / "file" / "token")


class TestSelection:
    def test_token_is_the_default(self, tmp_path):
        auth = resolve(host_dir(tmp_path, HOSTS[0]))
        assert auth.enabled and auth.file_token and "derived" in auth.source

    def test_the_users_token_wins_and_is_not_written(self, tmp_path):
        auth = resolve(host_dir(tmp_path, HOSTS[0]), RAY_AUTH_TOKEN="s3cret")
        assert auth.enabled and auth.file_token is None and "RAY_AUTH_TOKEN" in auth.source
        assert auth.environment(tmp_path / "unused") == {"RAY_AUTH_MODE": "token"}
        assert not (tmp_path / "unused").exists()

    def test_a_users_token_file_must_exist(self, tmp_path):
        base = host_dir(tmp_path, HOSTS[0])
        with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN_PATH=.*missing.*algo-1-ab3cd"):
            resolve(base, RAY_AUTH_TOKEN_PATH=str(tmp_path / "missing"))
        (tmp_path / "token").write_text("abc\n")
        assert resolve(base, RAY_AUTH_TOKEN_PATH=str(tmp_path / "token")).file_token is None

    @pytest.mark.parametrize("hyperparameter, env", [("disabled", {}), (None, {"RAY_AUTH_MODE": "disabled"})])
    def test_opt_out(self, tmp_path, hyperparameter, env):
        auth = resolve(host_dir(tmp_path, HOSTS[0]), hyperparameter, **env)
        assert not auth.enabled and auth.file_token is None and "disabled" in auth.source
        assert auth.environment(tmp_path / "unused") == {"RAY_AUTH_MODE": "disabled"}

    def test_an_invalid_environment_mode_fails(self, tmp_path):
        with pytest.raises(
            HyperparameterError, match=r"RAY_AUTH_MODE: expected one of \['token', 'disabled'\], got 'off'"
        ):
            resolve(host_dir(tmp_path, HOSTS[0]), RAY_AUTH_MODE="off")

    def test_contradicting_settings_fail(self, tmp_path):
        with pytest.raises(HyperparameterError, match="ray.auth.*RAY_AUTH_MODE='disabled'"):
            resolve(host_dir(tmp_path, HOSTS[0]), "token", RAY_AUTH_MODE="disabled")
        assert resolve(host_dir(tmp_path, HOSTS[0]), "token", RAY_AUTH_MODE="token").enabled


class TestHyperparameter:
    rc = ResourceConfig(current_host=HOSTS[0], hosts=tuple(HOSTS))

    def test_values(self):
        assert ClusterSettings.from_hyperparameters({}, self.rc).auth is None
        assert ClusterSettings.from_hyperparameters({"ray.auth": "disabled"}, self.rc).auth == "disabled"
        assert ClusterSettings.from_hyperparameters({"ray.auth": "token"}, self.rc).auth == "token"

    @pytest.mark.parametrize("value", ["off", True, "", "Token"])
    def test_a_bad_value_fails_before_ray_starts(self, value):
        with pytest.raises(HyperparameterError, match=r"'ray.auth': expected one of \['token', 'disabled'\]"):
            ClusterSettings.from_hyperparameters({"ray.auth": value}, self.rc)

    def test_a_token_hyperparameter_is_redacted_in_metadata(self):
        assert redact_secrets({"ray.auth": "disabled", "ray.auth_token": "x"}) == {
            "ray.auth": "<redacted>",
            "ray.auth_token": "<redacted>",
        }


TOOLS = Path(__file__).resolve().parents[3] / ".venv-tools" / "bin"


@pytest.fixture(scope="module")
def secrets_manager():
    """moto's server (the Secrets Manager API) on a free loopback port; yields its URL. Needs
    ``scripts/ensure-tools.sh publish`` (``.venv-tools``)."""
    import os
    import subprocess
    import time

    import requests
    from devtools import free_port

    binary = TOOLS / "moto_server"
    if not binary.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("moto is missing: scripts/ensure-tools.sh publish installs it")
        pytest.skip("moto is missing: scripts/ensure-tools.sh publish installs it")
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a busy machine starts it slowly
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class TestSecretsManagerToken:
    @pytest.fixture
    def aws(self, secrets_manager, monkeypatch):
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_manager)
        import boto3

        return boto3.client("secretsmanager")

    def test_the_secrets_string_is_the_token(self, tmp_path, aws):
        arn = aws.create_secret(Name=f"ray-token-{tmp_path.name}", SecretString="r4nd0m-t0ken\n")["ARN"]
        auth = resolve_auth(environment(host_dir(tmp_path, HOSTS[0])), None, {}, secret_id=arn)
        assert auth.enabled and auth.file_token == "r4nd0m-t0ken" and arn in auth.source
        # RAY_AUTH_TOKEN in the environment still wins.
        auth = resolve_auth(environment(host_dir(tmp_path, HOSTS[0])), None, {"RAY_AUTH_TOKEN": "t"}, secret_id=arn)
        assert auth.file_token is None

    def test_a_missing_secret_fails_naming_it_and_the_permission(self, tmp_path, aws):
        with pytest.raises(ClusterError, match="'no-such-secret'.*ResourceNotFoundException.*GetSecretValue"):
            resolve_auth(environment(host_dir(tmp_path, HOSTS[0])), None, {}, secret_id="no-such-secret")

    def test_the_hyperparameter(self):
        rc = ResourceConfig(current_host=HOSTS[0], hosts=tuple(HOSTS))
        assert ClusterSettings.from_hyperparameters({"ray.auth_token_secret": "s"}, rc).auth_token_secret == "s"
        with pytest.raises(HyperparameterError, match="'ray.auth_token_secret': expected a non-empty string"):
            ClusterSettings.from_hyperparameters({"ray.auth_token_secret": 3}, rc)
