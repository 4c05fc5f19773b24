"""The project's exceptions.

Each one carries a message written for the person who has to act on it: what was expected, what
was found. Training turns them into the failure file (`/opt/ml/output/failure`, whose first 1024
characters SageMaker shows as `FailureReason`); serving turns `RequestError` into a 4xx JSON body.
"""

from __future__ import annotations


class SageMakerRayRLError(Exception):
    """Base class: an error the user can fix, reported without a traceback."""


class ContractError(SageMakerRayRLError):
    """A file or variable of the SageMaker contract is malformed (e.g. resourceconfig.json)."""


class HyperparameterError(SageMakerRayRLError, ValueError):
    """A hyperparameter is unknown or has a value of the wrong type or range.

    Raised before Ray starts, so a bad job fails in seconds.
    """


class TrainingError(SageMakerRayRLError):
    """The experiment ran but did not produce a checkpoint (a trial failed or was stopped)."""


class ClusterError(SageMakerRayRLError):
    """The Ray cluster over the job's hosts could not be formed or was lost.

    The message names the host, what was expected and what happened (e.g. ``host algo-3-x7k2p did
    not join the Ray cluster within 300 s``).
    """


class RequirementsError(SageMakerRayRLError):
    """A user source dir's ``requirements.txt`` asks for versions of packages the image pins to others
    (Ray, torch, Gymnasium, ...); raised before pip runs."""


class ModelLoadError(SageMakerRayRLError):
    """The model directory holds no loadable RLlib checkpoint, or one this server cannot serve."""


class RequestError(SageMakerRayRLError):
    """A request to the model server that the server must refuse with a 4xx status.

    Attributes:
        status: HTTP status code (400, 404, 406, 409, 413, 415, ...; 507 for a multi-model load
            over the memory budget, which SageMaker's contract asks for).
        message: what was wrong, in one sentence.
        field: the request field at fault (e.g. ``instances[3]``), or None.
        expected: what would have been accepted (e.g. ``array of shape (4,) float32``), or None.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.expected = expected

    def to_dict(self) -> dict[str, object]:
        """The JSON body of the error response: ``error``, ``message`` and, when known,
        ``field`` and ``expected``."""
        body: dict[str, object] = {"error": _REASONS.get(self.status, "Error"), "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.expected is not None:
            body["expected"] = self.expected
        return body


_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    413: "PayloadTooLarge",
    409: "Conflict",
    415: "UnsupportedMediaType",
    507: "InsufficientStorage",
}
