"""SageMaker endpoint data capture (Model Monitor) plus the env's rewards -> an offline dataset.

An endpoint deployed with ``DataCaptureConfig`` (capture options Input and
Output) writes JSON Lines records ``{"captureData": {"endpointInput": {...}, "endpointOutput":
{...}}, "eventMetadata": {"eventId", "inferenceId", "inferenceTime"}, "eventVersion": "0"}`` to S3;
each part has ``observedContentType``, ``mode``, ``data`` and ``encoding`` (``JSON``, ``CSV``, or
``BASE64``). The system sends each request with an inference id (``invoke_endpoint(...,
InferenceId=...)``; else the capture's ``eventId`` identifies it) and logs one rewards line per
decision, ``{"inferenceId": id, "reward": r, "terminated": bool, "truncated": bool}``. Every request
format the server accepts converts, with the probabilities the server returned (request
``"explore": true, "outputs": ["action_prob"]``); answers without them still convert, flagged. A
system that explores on its own logs the action it took and its probability on the rewards line
(``"action"``, ``"action_prob"``; `convert_capture`)::

    python -m sagemaker_ray_rl.offline.convert --captures capture/ --rewards rewards.jsonl \\
        --out DIR --env CartPole-v1

Own code because no library maps SageMaker capture files to RLlib's offline columns
(``sagemaker.model_monitor`` only lists capture files in S3). The request and answer bodies are
parsed here, not by `serving.codecs`: the import layers keep ``offline`` and ``serving`` apart, and
the unit tests build the bodies with the server's own codecs. The command line is
`sagemaker_ray_rl.offline.convert`'s.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sagemaker_ray_rl.offline.collect import CollectResult
from sagemaker_ray_rl.offline.dataset import DatasetError, Step
from sagemaker_ray_rl.offline.logged import (
    Logged,
    decode_action,
    decode_observation,
    logged_spaces,
    numbered_jsonl,
    write_steps,
)

#: ``captureData.<part>.encoding`` values of SageMaker data capture.
CAPTURE_ENCODINGS = ("JSON", "CSV", "BASE64")
#: Default meaning of the columns of a ``text/csv`` answer: the server writes the action's values,
#: then the requested outputs in request order (``outputs=action_prob`` gives ``action,action_prob``).
CSV_COLUMNS = ("action", "action_prob")
_JSON, _JSONLINES, _CSV, _NPY = "application/json", "application/jsonlines", "text/csv", "application/x-npy"
_MEDIA_ALIASES = {
    "application/x-jsonlines": _JSONLINES,
    "application/jsonl": _JSONLINES,
    "application/x-ndjson": _JSONLINES,
    "text/json": _JSON,
}


@dataclass
class CapturedDecision:
    """One observation of a captured request and the server's answer to it.

    Attributes:
        obs: float32, the observation space's shape.
        action: int (Discrete).
        action_prob: float in (0, 1], or None when the answer did not carry it.
        eps_id: the record's ``eps_id`` (JSON bodies), or None.
        where: ``<file> line <n>[ observation <i>]``, for messages.
    """

    obs: np.ndarray
    action: int
    action_prob: float | None
    eps_id: str | None
    where: str


@dataclass
class CapturedRequest:
    """One data-capture record: its ids, time, and decisions (one per observation of the request)."""

    event_id: str | None
    inference_id: str | None
    inference_time: str
    decisions: list[CapturedDecision]
    where: str


def capture_files(paths: Sequence[Path]) -> list[Path]:
    """The capture files: each path itself when a file, else every ``*.jsonl`` under it (recursively,
    sorted: SageMaker writes ``<prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<n>-<uuid>.jsonl``).

    Raises:
        DatasetError: a path is missing or a directory holds no ``.jsonl`` files.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(path.rglob("*.jsonl"))
            if not found:
                raise DatasetError(f"{path}: no *.jsonl data-capture files under it")
            files += found
        else:
            raise DatasetError(f"{path}: no such file or directory (expected SageMaker data-capture JSON Lines)")
    return files


def read_captures(
    paths: Sequence[Path], obs_space: Any, act_space: Any, csv_columns: Sequence[str] = CSV_COLUMNS
) -> list[CapturedRequest]:
    """Parse SageMaker Model Monitor data-capture files into requests and decisions, in time order.

    A record (one JSON line; SageMaker's documented shape, ``eventVersion`` ``"0"``)::

        {"captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                           "data": "<body>", "encoding": "JSON"},
                         "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                            "data": "<body>", "encoding": "JSON"}},
         "eventMetadata": {"eventId": "...", "inferenceId": "...", "inferenceTime": "2026-12-01T15:31:05Z"},
         "eventVersion": "0"}

    ``encoding`` ``JSON`` and ``CSV`` hold the body as text, ``BASE64`` its bytes base64-encoded (what
    SageMaker writes for content types not listed in ``CaptureContentTypeHeader``). Request bodies are
    any the server accepts (``application/json``: ``instances``, ``observation`` or the legacy
    ``inputs.observations``; ``application/jsonlines``; ``text/csv``; ``application/x-npy``); answers
    are the server's (``predictions``, legacy ``outputs`` with ``actions_0``/``action_prob``, JSON
    Lines, CSV rows laid out as `csv_columns`, or ``.npy`` actions, which carry no probabilities).
    Records are ordered by ``inferenceTime`` (stable: file order within a second).

    Raises:
        DatasetError: naming the file and line: not JSON, not a capture record, an input-only capture,
            an unknown encoding or content type, a body that does not decode, an error answer, an
            answer with a different number of decisions than the request has observations, an
            observation or action outside the spaces, a ``multi-agent`` request, or an ``eventId`` /
            ``inferenceId`` seen before.
    """
    requests: list[CapturedRequest] = []
    seen: dict[tuple[str, str], str] = {}
    for file in capture_files(paths):
        for number, record in numbered_jsonl(file):
            where = f"{file} line {number}"
            if not isinstance(record, dict) or not isinstance(record.get("captureData"), dict):
                raise DatasetError(f"{where}: expected a data-capture record with 'captureData', got {record!r:.200}")
            data = record["captureData"]
            if "endpointOutput" not in data or "endpointInput" not in data:
                raise DatasetError(
                    f"{where}: the record has {sorted(data)}; both endpointInput and endpointOutput are needed "
                    "(DataCaptureConfig capture options Input and Output)"
                )
            meta = record.get("eventMetadata")
            if not isinstance(meta, dict):
                raise DatasetError(f"{where}: expected 'eventMetadata' with eventId and inferenceTime")
            for key in ("eventId", "inferenceId"):
                value = meta.get(key)
                if value is None:
                    continue
                if (key, str(value)) in seen:
                    raise DatasetError(f"{where}: duplicate {key} {value!r} (first at {seen[key, str(value)]})")
                seen[key, str(value)] = where
            in_type, in_body = _capture_body(data["endpointInput"], f"{where} endpointInput")
            out_type, out_body = _capture_body(data["endpointOutput"], f"{where} endpointOutput")
            observations = _request_observations(in_type, in_body, f"{where} endpointInput", obs_space)
            answers = _response_decisions(out_type, out_body, f"{where} endpointOutput", csv_columns)
            if len(answers) != len(observations):
                raise DatasetError(
                    f"{where}: the request has {len(observations)} observations but the answer {len(answers)} actions"
                )
            decisions = []
            for i, ((obs, eps_id), (action, prob)) in enumerate(zip(observations, answers)):
                at = where if len(observations) == 1 else f"{where} observation {i}"
                decisions.append(
                    CapturedDecision(
                        obs,
                        decode_action(action, act_space, f"{at} endpointOutput"),
                        _probability(prob, f"{at} endpointOutput"),
                        eps_id,
                        at,
                    )
                )
            requests.append(
                CapturedRequest(
                    None if meta.get("eventId") is None else str(meta["eventId"]),
                    None if meta.get("inferenceId") is None else str(meta["inferenceId"]),
                    str(meta.get("inferenceTime", "")),
                    decisions,
                    where,
                )
            )
    if not requests:
        raise DatasetError(f"{', '.join(map(str, paths))}: no data-capture records")
    return sorted(requests, key=lambda r: r.inference_time)


def convert_capture(
    output_dir: Path,
    *,
    captures: Sequence[Path],
    rewards: Path,
    env: str,
    env_config: Mapping[str, Any] | None = None,
    csv_columns: Sequence[str] = CSV_COLUMNS,
) -> CollectResult:
    """Write the dataset of endpoint data captures plus the rewards the system observed.

    Args:
        output_dir: dataset directory (Parquet + ``dataset_info.json``), as `collect` writes it.
        captures: data-capture files or directories of them (`read_captures`).
        rewards: JSON Lines, one line per decision: ``{"inferenceId": id, "reward": r,
            "terminated": bool, "truncated": bool}`` (or ``"eventId": id`` for captures of requests
            sent without an inference id), plus ``"index": i`` for the i-th observation of a
            multi-observation request (default 0), and optionally ``"eps_id"`` (else the request
            record's ``eps_id``, else episodes are consecutive decisions in time order ending at
            ``terminated``/``truncated``), ``"t"`` (step index inside the episode, orders its
            steps) and ``"next_observation"`` (needed on the last step of a truncated episode).
            A system that does not always act as the endpoint answered (it explores on its own,
            e.g. the answer's greedy action with probability 0.25, else a uniform one) logs the
            action it took as ``"action"`` and that action's behaviour probability as
            ``"action_prob"``; they replace the answer's (a line with ``"action"`` but no
            ``"action_prob"`` leaves the probability unknown, flagged as below). ``"action_prob"``
            alone replaces only the answer's probability.
        env, env_config: the env the system is (its spaces; it is not stepped).
        csv_columns: meaning of the columns of ``text/csv`` answers (`CSV_COLUMNS`).

    Returns:
        A `CollectResult`. ``dataset_info.json`` records ``behaviour_probabilities``: false (and
        how many are missing) when some answers had no ``action_prob``; their rows hold NaN and the
        offline job then skips the importance-sampling estimators (and DR) with that reason.

    Raises:
        DatasetError: see `read_captures`; and, naming the line: a rewards line that is not a
            reward, names no id, an id no capture has, or an id (and index) another line already
            gave; a decision no rewards line gives a reward for (naming its capture line); an
            ``action`` outside the action space or an ``action_prob`` outside (0, 1].
    """
    env_config = dict(env_config or {})
    obs_space, act_space = logged_spaces(env, env_config)
    requests = read_captures(captures, obs_space, act_space, csv_columns)
    by_id = {
        key: {getattr(r, attr): r for r in requests if getattr(r, attr) is not None}
        for key, attr in (("inferenceId", "inference_id"), ("eventId", "event_id"))
    }
    feedback: dict[tuple[int, int], tuple[dict[str, Any], str]] = {}
    for number, fb in numbered_jsonl(Path(rewards)):
        where = f"{rewards} line {number}"
        if not isinstance(fb, dict):
            raise DatasetError(f'{where}: expected {{"inferenceId": id, "reward": number, ...}}, got {fb!r}')
        keys = [k for k in ("inferenceId", "eventId") if fb.get(k) is not None]
        if not keys:
            raise DatasetError(f"{where}: names no inferenceId or eventId (the capture it rewards)")
        request = by_id[keys[0]].get(str(fb[keys[0]]))
        if request is None:
            raise DatasetError(f"{where}: no capture has {keys[0]} {fb[keys[0]]!r}")
        index = fb.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(request.decisions):
            raise DatasetError(
                f"{where}: index must be an observation index of its request, 0..{len(request.decisions) - 1}, "
                f"got {index!r}"
            )
        key = (id(request), index)
        if key in feedback:
            raise DatasetError(
                f"{where}: duplicate reward for {keys[0]} {fb[keys[0]]!r}"
                + (f" index {index}" if len(request.decisions) > 1 else "")
                + f" (first at {feedback[key][1]})"
            )
        feedback[key] = (fb, where)

    steps: list[Logged] = []
    for request in requests:
        for index, decision in enumerate(request.decisions):
            if (id(request), index) not in feedback:
                ids = {"inferenceId": request.inference_id, "eventId": request.event_id}
                named = ", ".join(f"{k} {v!r}" for k, v in ids.items() if v is not None)
                raise DatasetError(
                    f"{decision.where}: no reward in {rewards} for {named}"
                    + (f" index {index}" if len(request.decisions) > 1 else "")
                )
            fb, where = feedback[id(request), index]
            reward = fb.get("reward")
            if isinstance(reward, bool) or not isinstance(reward, (int, float)):
                raise DatasetError(
                    f'{where}: expected {{"reward": number, "terminated": bool, "truncated": bool}}, got {fb!r}'
                )
            flags = {k: fb.get(k, False) for k in ("terminated", "truncated")}
            if not all(isinstance(v, bool) for v in flags.values()):
                raise DatasetError(f"{where}: terminated and truncated must be true or false, got {flags}")
            t = fb.get("t")
            if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 0):
                raise DatasetError(f"{where}: t must be a step index >= 0, got {t!r}")
            eps_id = fb.get("eps_id", decision.eps_id)
            action, action_prob = decision.action, decision.action_prob
            if "action" in fb:  # the system acted on its own: its action, and its probability or none
                action, action_prob = decode_action(fb["action"], act_space, f"{where} action"), None
            if "action_prob" in fb:
                action_prob = _probability(fb["action_prob"], f"{where} action_prob")
            step = Step(
                eps_id=None if eps_id is None else str(eps_id),
                t=t,
                obs=decision.obs,
                actions=action,
                rewards=float(reward),
                new_obs=(
                    decode_observation(fb["next_observation"], obs_space, f"{where} next_observation")
                    if "next_observation" in fb
                    else None
                ),
                terminateds=flags["terminated"],
                truncateds=flags["truncated"],
                action_prob=action_prob,
            )
            steps.append((step, where))
    missing = sum(step.action_prob is None for step, _ in steps)
    if missing:
        print(
            f"{missing} of {len(steps)} captured answers have no action_prob: the dataset is flagged "
            "(behaviour_probabilities: false) and offline jobs skip the importance-sampling estimators "
            '(send "outputs": ["action_prob"] to record them)',
            flush=True,
        )
    return write_steps(
        Path(output_dir),
        steps,
        env=env,
        env_config=env_config,
        spaces=(obs_space, act_space),
        behaviour={"name": "endpoint_capture", "captures": [str(c) for c in captures]},
    )


def _capture_body(part: Any, where: str) -> tuple[str, bytes]:
    """(media type, body bytes) of a ``captureData`` part."""
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise DatasetError(
            f"{where}: expected {{'observedContentType', 'mode', 'data', 'encoding'}}, got {part!r:.200}"
        )
    encoding = part.get("encoding")
    if encoding not in CAPTURE_ENCODINGS:
        raise DatasetError(f"{where}: encoding must be one of {list(CAPTURE_ENCODINGS)}, got {encoding!r}")
    if encoding == "BASE64":
        try:
            body = base64.b64decode(part["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DatasetError(f"{where}: data is not base64 ({exc})") from exc
    else:
        body = part["data"].encode("utf-8")
    media = str(part.get("observedContentType") or _JSON).split(";")[0].strip().lower()
    media = _MEDIA_ALIASES.get(media, media)
    if media not in (_JSON, _JSONLINES, _CSV, _NPY):
        raise DatasetError(
            f"{where}: observedContentType {part.get('observedContentType')!r} is not one the server speaks "
            f"({_JSON}, {_JSONLINES}, {_CSV}, {_NPY})"
        )
    return media, body


def _json_body(body: bytes, where: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{where}: data is not JSON ({exc})") from exc


def _csv_rows(body: bytes, where: str) -> list[list[float]]:
    try:
        return [[float(v) for v in row] for row in csv.reader(io.StringIO(body.decode("utf-8"))) if row]
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise DatasetError(f"{where}: data is not CSV of numbers ({exc})") from exc


def _npy(body: bytes, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, ... for bad files
        raise DatasetError(f"{where}: data is not a .npy array ({type(exc).__name__}: {exc})") from exc


def _request_observations(media: str, body: bytes, where: str, space: Any) -> list[tuple[np.ndarray, str | None]]:
    """(observation, eps_id or None) per observation of a request body the server accepts."""
    raw: list[tuple[Any, Any]]
    if media == _JSON:
        payload = _json_body(body, where)
        if not isinstance(payload, dict):
            raise DatasetError(f"{where}: expected a JSON object request, got {payload!r:.200}")
        eps_id = payload.get("eps_id")
        if "agents" in payload:
            raise DatasetError(f"{where}: multi-agent ('agents') requests do not convert to a single-agent dataset")
        if "instances" in payload and isinstance(payload["instances"], list):
            raw = [(obs, eps_id) for obs in payload["instances"]]
        elif "observation" in payload:
            raw = [(payload["observation"], eps_id)]
        elif isinstance(payload.get("inputs"), dict) and isinstance(payload["inputs"].get("observations"), list):
            raw = [(obs, eps_id) for obs in payload["inputs"]["observations"]]
        else:
            raise DatasetError(
                f"{where}: expected a request with 'instances', 'observation' or 'inputs.observations', "
                f"got keys {sorted(payload)}"
            )
    elif media == _JSONLINES:
        raw = []
        for number, line in enumerate(body.decode("utf-8", errors="replace").splitlines(), start=1):
            if line.strip():
                record = _json_body(line.encode(), f"{where} body line {number}")
                if isinstance(record, dict) and "observation" in record:
                    raw.append((record["observation"], record.get("eps_id")))
                else:
                    raw.append((record, None))
    elif media == _CSV:
        raw = [(row, None) for row in _csv_rows(body, where)]
    else:
        array = _npy(body, where)
        batch = array[None] if array.shape == tuple(space.shape) else array
        raw = [(obs, None) for obs in batch]
    if not raw:
        raise DatasetError(f"{where}: the request has no observations")
    at = (lambda i: where) if len(raw) == 1 else (lambda i: f"{where} observation {i}")
    return [
        (decode_observation(obs, space, at(i)), None if eps is None else str(eps)) for i, (obs, eps) in enumerate(raw)
    ]


def _response_decisions(media: str, body: bytes, where: str, csv_columns: Sequence[str]) -> list[tuple[Any, Any]]:
    """(action, action_prob or None) per answered observation."""
    if media == _JSON:
        payload = _json_body(body, where)
        if isinstance(payload, dict) and isinstance(payload.get("predictions"), list):
            answers = payload["predictions"]
            if not all(isinstance(a, dict) and "action" in a for a in answers):
                raise DatasetError(f'{where}: expected predictions [{{"action": a, ...}}, ...], got {answers!r:.200}')
            return [(a["action"], a.get("action_prob")) for a in answers]
        if isinstance(payload, dict) and isinstance(payload.get("outputs"), dict):
            outputs = payload["outputs"]
            actions = outputs.get("actions_0")
            if not isinstance(actions, list):
                raise DatasetError(f"{where}: legacy outputs without a list 'actions_0': {sorted(outputs)}")
            probs = outputs.get("action_prob")
            if probs is not None and (not isinstance(probs, list) or len(probs) != len(actions)):
                raise DatasetError(f"{where}: legacy outputs' action_prob must be a list like actions_0")
            return list(zip(actions, probs if probs is not None else [None] * len(actions)))
        if isinstance(payload, dict) and "error" in payload:
            raise DatasetError(f"{where}: the server answered an error, not actions: {payload!r:.300}")
        raise DatasetError(
            f"{where}: expected the server's answer with 'predictions' or 'outputs', got {payload!r:.200}"
        )
    if media == _JSONLINES:
        answers = [
            _json_body(line.encode(), f"{where} body line {n}")
            for n, line in enumerate(body.decode("utf-8", errors="replace").splitlines(), start=1)
            if line.strip()
        ]
        if not all(isinstance(a, dict) and "action" in a for a in answers):
            raise DatasetError(f'{where}: expected one {{"action": a, ...}} per line')
        return [(a["action"], a.get("action_prob")) for a in answers]
    if media == _CSV:
        columns = list(csv_columns)
        rows = _csv_rows(body, where)
        out = []
        for row in rows:
            if len(row) not in (1, len(columns)):
                raise DatasetError(
                    f"{where}: a CSV answer row has {len(row)} values; expected 1 (the action) or "
                    f"{len(columns)} ({', '.join(columns)})"
                )
            action = row[columns.index("action")] if len(row) > 1 else row[0]
            prob = row[columns.index("action_prob")] if len(row) > 1 and "action_prob" in columns else None
            out.append((int(action) if float(action).is_integer() else action, prob))
        return out
    return [(a.item() if isinstance(a, np.generic) else a, None) for a in _npy(body, where).tolist()]


def _probability(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise DatasetError(f"{where}: action_prob must be a number in (0, 1], got {value!r}")
    return float(value)
