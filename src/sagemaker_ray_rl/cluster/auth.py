"""Ray token authentication for the job's cluster: on by default, with a token every host has.

Ray 2.60 authenticates every GCS, raylet and dashboard (agent) request with one shared bearer token
when ``RAY_AUTH_MODE=token`` is set in every Ray process (Ray's "Token authentication" design doc).
Every host of the job must hold the same token; this module decides which one, in this order:

1. ``RAY_AUTH_TOKEN`` in the environment (the estimator's ``environment=``, which every host gets):
   used as it is;
2. ``RAY_AUTH_TOKEN_PATH`` in the environment: a token file the user placed in the image;
3. the hyperparameter ``ray.auth_token_secret``: the id or ARN of an AWS Secrets Manager secret whose
   string is the token, fetched on every host with the job's role (``secretsmanager:GetSecretValue``);
4. otherwise a token DERIVED on each host (`derive_token`): HMAC-SHA256 over what every host of the
   job receives from SageMaker and what the job's network does not carry: ``hyperparameters.json``,
   ``inputdataconfig.json``, the job's host list (``resourceconfig.json``) and the job's name and ARN
   (``TRAINING_JOB_NAME``, ``TRAINING_JOB_ARN``).

A fetched or derived token is written to `TOKEN_FILE` (mode 0600) and Ray reads it through
``RAY_AUTH_TOKEN_PATH``; it is never logged.

The derived token keeps out whoever can reach the hosts' ports without knowing the job's definition
(another machine in the job's VPC subnet, a container on the same network). It is no secret from
anyone who can call ``DescribeTrainingJob`` (which shows the hyperparameters and the name) or guess
them; a random token in a secret (``ray.auth_token_secret``) or in the estimator's environment
(``RAY_AUTH_TOKEN``, which ``DescribeTrainingJob`` shows too) is stronger.

Opting out: the hyperparameter ``ray.auth=disabled`` or ``RAY_AUTH_MODE=disabled`` in the environment
(`settings`). Both are checked before any Ray process starts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import ClusterError, HyperparameterError
from sagemaker_ray_rl.contract.validation import invalid

#: Ray's own variables (``ray._private.authentication``, Ray 2.60).
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
#: The values of ``RAY_AUTH_MODE`` (and of the hyperparameter ``ray.auth``) that Ray 2.60 accepts.
TOKEN = "token"
DISABLED = "disabled"
AUTH_MODES = (TOKEN, DISABLED)
#: Where a derived token is written for ``RAY_AUTH_TOKEN_PATH``.
TOKEN_FILE = Path(tempfile.gettempdir()) / "sagemaker_ray_rl" / "ray_auth_token"
#: The job's name and ARN as SageMaker sets them in every host's environment.
JOB_NAME_ENV = "TRAINING_JOB_NAME"
JOB_ARN_ENV = "TRAINING_JOB_ARN"
#: The HMAC key of `derive_token`: public; it only tells this derivation from any other hash of the
#: same files. The token's secrecy is that of its inputs.
DERIVATION_KEY = b"sagemaker-ray-rl ray auth token v1"


@dataclass(frozen=True)
class RayAuth:
    """How the job's Ray processes authenticate.

    Attributes:
        mode: ``RAY_AUTH_MODE``: ``"token"`` or ``"disabled"``.
        source: where the token comes from, or why authentication is off (for the job log; never the
            token itself).
        file_token: the token to write to `TOKEN_FILE` (fetched from the secret, or `derive_token`'s);
            None when Ray finds the user's own (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``) or
            authentication is off.
    """

    mode: str
    source: str
    file_token: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        """Whether token authentication is on."""
        return self.mode == TOKEN

    def environment(self, token_file: Path = TOKEN_FILE) -> dict[str, str]:
        """The variables every process that talks to the cluster needs (``ray start``, the driver,
        a user entry point, and through the raylets every Ray worker): ``RAY_AUTH_MODE``, and for a
        fetched or derived token ``RAY_AUTH_TOKEN_PATH`` after writing the token to `token_file` (mode 0600).

        Raises:
            ClusterError: `token_file` cannot be written.
        """
        env = {RAY_AUTH_MODE_ENV: self.mode}
        if self.file_token is not None:
            try:
                write_token_file(token_file, self.file_token)
            except OSError as exc:
                raise ClusterError(
                    f"could not write the Ray authentication token to {token_file} ({type(exc).__name__}: {exc}); "
                    f"set {RAY_AUTH_TOKEN_ENV} in the estimator's environment instead"
                ) from exc
            env[RAY_AUTH_TOKEN_PATH_ENV] = str(token_file)
        return env


def resolve_auth(
    environment: Environment,
    hyperparameter: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    secret_id: str | None = None,
) -> RayAuth:
    """Choose the job's authentication (module docstring): the same answer on every host.

    Args:
        environment: the job's contract (for the input config dir and the host list).
        hyperparameter: the validated value of ``ray.auth`` (`settings.ClusterSettings.auth`), None
            when not given.
        environ: the variables to read; ``os.environ`` when None.
        secret_id: ``ray.auth_token_secret`` (`settings.ClusterSettings.auth_token_secret`), or None.

    Raises:
        HyperparameterError: ``RAY_AUTH_MODE`` is neither ``token`` nor ``disabled``, or it
            contradicts ``ray.auth``.
        ClusterError: ``RAY_AUTH_TOKEN_PATH`` names a file that is missing or empty; the secret
            cannot be read (the message names it and the permission the job's role needs) or is empty.
    """
    env = os.environ if environ is None else environ
    env_mode = env.get(RAY_AUTH_MODE_ENV)
    if env_mode is not None and env_mode not in AUTH_MODES:
        raise HyperparameterError(
            f"environment variable {RAY_AUTH_MODE_ENV}: expected one of {list(AUTH_MODES)}, got {env_mode!r}"
        )
    if env_mode is not None and hyperparameter is not None and env_mode != hyperparameter:
        raise invalid(
            "ray.auth",
            f"the environment's {RAY_AUTH_MODE_ENV}={env_mode!r} or no value (they contradict each other)",
            hyperparameter,
        )
    mode = env_mode or hyperparameter or TOKEN
    if mode == DISABLED:
        why = f"{RAY_AUTH_MODE_ENV}=disabled in the environment" if env_mode else "hyperparameter ray.auth=disabled"
        return RayAuth(DISABLED, why)
    if env.get(RAY_AUTH_TOKEN_ENV):
        return RayAuth(TOKEN, f"{RAY_AUTH_TOKEN_ENV} from the environment")
    path = env.get(RAY_AUTH_TOKEN_PATH_ENV)
    if path:
        try:
            ok = bool(Path(path).read_text().strip())
        except OSError:
            ok = False
        if not ok:
            raise ClusterError(
                f"{RAY_AUTH_TOKEN_PATH_ENV}={path} names no readable, non-empty token file on host "
                f"{environment.resource_config.current_host}; Ray would refuse to start"
            )
        return RayAuth(TOKEN, f"the file {RAY_AUTH_TOKEN_PATH_ENV} names")
    if secret_id:
        return RayAuth(TOKEN, f"AWS Secrets Manager secret {secret_id}", fetch_secret_token(secret_id))
    return RayAuth(
        TOKEN,
        "derived from the job's definition (hyperparameters, input channels, hosts, job name)",
        derive_token(environment.input_config_dir, environment.resource_config.hosts, env),
    )


def derive_token(config_dir: Path, hosts: tuple[str, ...] | list[str], environ: Mapping[str, str]) -> str:
    """The token every host of the job computes alike (module docstring).

    Args:
        config_dir: ``/opt/ml/input/config``; ``hyperparameters.json`` and ``inputdataconfig.json``
            are read from it when present (as parsed JSON, so whitespace and key order do not matter).
        hosts: the job's host names (``resourceconfig.json``'s ``hosts``; order does not matter).
        environ: the variables holding ``TRAINING_JOB_NAME`` and ``TRAINING_JOB_ARN`` (either may be
            missing, e.g. under ``docker run``).

    Returns:
        64 lowercase hex characters (HMAC-SHA256 with `DERIVATION_KEY`).
    """
    material = {
        "hyperparameters": _json_file(config_dir / "hyperparameters.json"),
        "inputdataconfig": _json_file(config_dir / "inputdataconfig.json"),
        "hosts": sorted(hosts),
        "training_job_name": environ.get(JOB_NAME_ENV, ""),
        "training_job_arn": environ.get(JOB_ARN_ENV, ""),
    }
    message = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(DERIVATION_KEY, message, hashlib.sha256).hexdigest()


def fetch_secret_token(secret_id: str) -> str:
    """The ``SecretString`` of the AWS Secrets Manager secret `secret_id` (a name or an ARN), read
    with boto3's default credentials (on SageMaker: the job's role) and region.

    Raises:
        ClusterError: the secret cannot be read (missing, no ``secretsmanager:GetSecretValue``
            permission, no network route to Secrets Manager, e.g. under network isolation) or holds
            no non-empty string.
    """
    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id).get("SecretString")
    except Exception as exc:  # botocore's errors: ClientError, NoCredentialsError, EndpointConnectionError...
        raise ClusterError(
            f"could not read the Ray authentication token from AWS Secrets Manager secret {secret_id!r} "
            f"(hyperparameter ray.auth_token_secret): {type(exc).__name__}: {exc}. The job's role needs "
            "secretsmanager:GetSecretValue on it, and the job a route to Secrets Manager (not network isolation)"
        ) from exc
    if not isinstance(value, str) or not value.strip():
        raise ClusterError(
            f"AWS Secrets Manager secret {secret_id!r} (hyperparameter ray.auth_token_secret) holds no token: "
            "expected a non-empty SecretString"
        )
    return value.strip()


def write_token_file(path: Path, token: str) -> None:
    """Write `token` to `path`, readable and writable by this user only (0600), its directory
    created when missing (0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
    finally:
        os.close(fd)


def _json_file(path: Path) -> Any:
    """The parsed JSON of `path`; None when missing; its raw text when it is not JSON (still the same
    bytes on every host)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text
