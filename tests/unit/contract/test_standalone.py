from __future__ import annotations

import json
from pathlib import Path

from helpers import write_job

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.standalone import fill_missing_config


def test_writes_only_missing_files_and_the_toolkit_reads_them(job_dir: Path):
    write_job(job_dir, {"stop.training_iteration": 3})
    environment = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})
    assert fill_missing_config(environment, hostname="box-1") == ["resourceconfig.json", "inputdataconfig.json"]
    assert fill_missing_config(environment, hostname="other") == []

    config = job_dir / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == {"stop.training_iteration": "3"}
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["box-1"]
    reread = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})
    assert reread.resource_config.current_host == "box-1" and reread.channels == {}
