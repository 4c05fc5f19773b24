"""The multi-model registry without HTTP: two registries on one state directory stand for two
gunicorn workers; the loader is counted (the HTTP tests load real policies)."""

from __future__ import annotations

import json

import pytest

from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.contract.errors import RequestError
from sagemaker_ray_rl.serving.multi_model import ModelNotFound, ModelRegistry, estimate_model_bytes


class CountingLoader:
    def __init__(self):
        self.calls = []

    def __call__(self, url):
        self.calls.append(str(url))
        return object()


@pytest.fixture
def models(tmp_path):
    out = {}
    for name, size in (("a", 1000), ("b", 2000), ("c", 3000)):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "weights").write_bytes(b"x" * size)
        out[name] = tmp_path / "models" / name
    return out


def registry(tmp_path, loader, budget=10**12, workers=1):
    return ModelRegistry(tmp_path / "state", ServingSettings(), budget_bytes=budget, workers=workers, loader=loader)


def body(name, url):
    return json.dumps({"model_name": name, "url": str(url)}).encode()


def test_workers_share_the_loaded_models(tmp_path, models):
    loader_a, loader_b = CountingLoader(), CountingLoader()
    worker_a, worker_b = registry(tmp_path, loader_a), registry(tmp_path, loader_b)
    worker_a.load(body("a", models["a"]))
    assert worker_b.describe("a")["modelUrl"] == str(models["a"])
    assert loader_b.calls == []
    worker_b._policy("a")  # first use in worker b loads its own copy, once
    worker_b._policy("a")
    assert loader_b.calls == [str(models["a"])]
    with pytest.raises(RequestError) as conflict:
        worker_b.load(body("a", models["a"]))
    assert conflict.value.status == 409
    worker_a.unload("a")
    with pytest.raises(ModelNotFound):
        worker_b._policy("a")
    assert "a" not in worker_b._local
    worker_b.load(body("a", models["b"]))  # a new model under the old name: worker a reloads
    worker_a._policy("a")
    assert loader_a.calls == [str(models["a"]), str(models["b"])]


def test_pages_are_sorted_by_name(tmp_path, models):
    reg = registry(tmp_path, CountingLoader())
    for name in ("c", "a", "b"):
        reg.load(body(name, models[name]))
    page = reg.list("2")
    assert [m["modelName"] for m in page["models"]] == ["a", "b"]
    last = reg.list("2", page["nextPageToken"])
    assert last == {"models": [{"modelName": "c", "modelUrl": str(models["c"])}]}
    assert [m["modelName"] for m in reg.list()["models"]] == ["a", "b", "c"]
    for bad in ("0", "x", "-1"):
        with pytest.raises(RequestError, match="max_results must be a positive integer"):
            reg.list(bad)


def test_budget_counts_every_worker(tmp_path, models):
    cost = estimate_model_bytes(models["a"])
    reg = registry(tmp_path, CountingLoader(), budget=3 * cost, workers=2)  # 1 model x 2 workers fits, not 2
    reg.load(body("a", models["a"]))
    with pytest.raises(RequestError, match="would exceed the memory budget") as full:
        reg.load(body("b", models["b"]))
    assert full.value.status == 507 and full.value.to_dict()["error"] == "InsufficientStorage"
    with pytest.raises(ModelNotFound):
        reg.describe("b")


@pytest.mark.parametrize(
    "payload, message",
    [(b"{", "not JSON"), (b'{"model_name": 3, "url": "/x"}', "string 'model_name'"), (b"", "string 'model_name'")],
)
def test_bad_load_bodies(tmp_path, payload, message):
    with pytest.raises(RequestError, match=message):
        registry(tmp_path, CountingLoader()).load(payload)
