"""What `sagemaker_ray_rl.inference.onnx_export` does without an exportable checkpoint: a clear
error from `export_onnx` and the CLI, a report (never an exception) from `export_onnx_safely`."""

from __future__ import annotations

import json

import pytest

from sagemaker_ray_rl.checkpoint import ONNX_EXPORT_REPORT, onnx_dir
from sagemaker_ray_rl.contract.errors import ModelLoadError
from sagemaker_ray_rl.inference import onnx_export


def test_export_onnx_names_the_missing_checkpoint(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelLoadError, match="no RLlib algorithm checkpoint in .*rllib_checkpoint.json"):
        onnx_export.export_onnx(tmp_path / "model")


def test_export_onnx_safely_reports_instead_of_raising(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"not a checkpoint")
    assert onnx_export.export_onnx_safely(model_dir) is None
    report = json.loads((onnx_dir(model_dir) / ONNX_EXPORT_REPORT).read_text())
    assert report["exported"] == {}
    assert report["not_exported"]["*"].startswith("ModelLoadError: no RLlib algorithm checkpoint in")


def test_export_onnx_safely_creates_nothing_for_a_missing_model_dir(tmp_path):
    assert onnx_export.export_onnx_safely(tmp_path / "absent") is None
    assert not (tmp_path / "absent").exists()


def test_cli_exits_2_with_the_reason(tmp_path, capsys):
    assert onnx_export.main([str(tmp_path)]) == 2
    assert "no RLlib algorithm checkpoint in" in capsys.readouterr().err


def test_exporter_errors_are_reported_by_their_summary_line():
    exc = RuntimeError(
        "Failed to export the model with torch.export. This is step 1/3\n- Modify the model code\n\n"
        "## Exception summary\n\n<class 'torch._dynamo.exc.Unsupported'>: data-dependent branching\nmore"
    )
    assert onnx_export._first_line(exc) == "<class 'torch._dynamo.exc.Unsupported'>: data-dependent branching"
    assert onnx_export._first_line(ValueError("one\ntwo")) == "one"
