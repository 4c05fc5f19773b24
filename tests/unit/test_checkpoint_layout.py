"""`checkpoint`'s names for the files of a model dir: the layout RLlib writes and the README
documents, the fingerprint that ties an ONNX export to its checkpoint, and the pickled config."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from ray.rllib.core import COMPONENT_ENV_RUNNER, COMPONENT_ENV_TO_MODULE_CONNECTOR, COMPONENT_MODULE_TO_ENV_CONNECTOR

from sagemaker_ray_rl import checkpoint
from sagemaker_ray_rl.checkpoint import (
    CHECKPOINT_MARKER,
    CLASS_AND_CTOR_ARGS_FILE,
    ENV_RUNNER_SUBDIR,
    ENV_TO_MODULE_SUBDIR,
    METADATA_FILE,
    MODULE_TO_ENV_SUBDIR,
    ONNX_EXPORT_REPORT,
    ONNX_SUBDIR,
    RL_MODULE_SUBDIR,
    checkpoint_fingerprint,
    onnx_dir,
    onnx_graph_path,
    onnx_sidecar_path,
    pickled_algorithm_config,
    rl_module_dir,
    versions,
)


def test_the_names_are_the_documented_layout():
    """What users, their scripts and earlier model.tar.gz files rely on (README, docs)."""
    assert CHECKPOINT_MARKER == "rllib_checkpoint.json"
    assert CLASS_AND_CTOR_ARGS_FILE == "class_and_ctor_args.pkl"
    assert RL_MODULE_SUBDIR.as_posix() == "learner_group/learner/rl_module"
    assert ENV_TO_MODULE_SUBDIR.as_posix() == "env_runner/env_to_module_connector"
    assert MODULE_TO_ENV_SUBDIR.as_posix() == "env_runner/module_to_env_connector"
    assert METADATA_FILE == "metadata.json"
    assert (ONNX_SUBDIR, ONNX_EXPORT_REPORT) == ("onnx", "export.json")
    model = Path("/opt/ml/model")
    assert rl_module_dir(model, "p0") == model / "learner_group" / "learner" / "rl_module" / "p0"
    assert onnx_dir(model) == model / "onnx"
    graph = onnx_graph_path(onnx_dir(model), "default_policy")
    assert graph == model / "onnx" / "default_policy.onnx"
    assert onnx_sidecar_path(graph) == model / "onnx" / "default_policy.json"
    assert onnx_sidecar_path(onnx_graph_path(model, "agent.1")) == model / "agent.1.json"


def test_the_connector_paths_are_rllibs_component_names():
    assert ENV_RUNNER_SUBDIR == Path(COMPONENT_ENV_RUNNER)
    assert ENV_TO_MODULE_SUBDIR == Path(COMPONENT_ENV_RUNNER) / COMPONENT_ENV_TO_MODULE_CONNECTOR
    assert MODULE_TO_ENV_SUBDIR == Path(COMPONENT_ENV_RUNNER) / COMPONENT_MODULE_TO_ENV_CONNECTOR


def _fake_checkpoint(root: Path) -> Path:
    for module_id in ("p0", "p1"):
        (rl_module_dir(root, module_id)).mkdir(parents=True)
        (rl_module_dir(root, module_id) / "module_state.pkl").write_bytes(module_id.encode())
    (root / ENV_TO_MODULE_SUBDIR).mkdir(parents=True)
    (root / ENV_TO_MODULE_SUBDIR / "state.pkl").write_bytes(b"filter")
    (root / CHECKPOINT_MARKER).write_text("{}")
    return root


def test_the_fingerprint_follows_the_module_and_the_connectors_only(tmp_path):
    root = _fake_checkpoint(tmp_path / "ckpt")
    before = checkpoint_fingerprint(root, "p0")
    assert len(before) == 64 and before != checkpoint_fingerprint(root, "p1")

    (root / METADATA_FILE).write_text("{}")
    onnx_dir(root).mkdir()
    (onnx_dir(root) / ONNX_EXPORT_REPORT).write_text("{}")
    (rl_module_dir(root, "p1") / "module_state.pkl").write_bytes(b"other weights")
    assert checkpoint_fingerprint(root, "p0") == before

    (root / ENV_TO_MODULE_SUBDIR / "state.pkl").write_bytes(b"other statistics")
    assert checkpoint_fingerprint(root, "p0") != before
    changed = checkpoint_fingerprint(root, "p0")
    (rl_module_dir(root, "p0") / "module_state.pkl").write_bytes(b"new weights")
    assert checkpoint_fingerprint(root, "p0") != changed


@pytest.mark.parametrize("ctor", [(({"lr": 0.1},), {}), ((), {"config": {"lr": 0.1}})], ids=["positional", "keyword"])
def test_the_pickled_config_is_read_from_either_constructor_form(tmp_path, ctor):
    (tmp_path / CLASS_AND_CTOR_ARGS_FILE).write_bytes(pickle.dumps({"class": dict, "ctor_args_and_kwargs": ctor}))
    assert pickled_algorithm_config(tmp_path) == {"lr": 0.1}
    with pytest.raises(FileNotFoundError):
        pickled_algorithm_config(tmp_path / "absent")


def test_versions_are_one_list_with_extras_on_request():
    base = versions()
    assert list(base) == ["python", *checkpoint.VERSIONED_PACKAGES, "sagemaker_ray_rl"]
    with_onnx = versions("onnx", "numpy")
    assert list(with_onnx) == ["python", *checkpoint.VERSIONED_PACKAGES, "onnx", "sagemaker_ray_rl"]
    assert {k: v for k, v in with_onnx.items() if k != "onnx"} == base
    with pytest.raises(ImportError):
        versions("no_such_package_here")
