"""The wheel built from the project holds every module a pipeline task imports.

Kubeflow tasks import the installed package from an arbitrary working
directory (the Dockerfile installs the wheel, not an editable checkout).
"""

import os
import pathlib
import shutil
import subprocess
import sys

from tests.helpers import ROOT

# What TFX loads by module path, what the KFP components import, and the CLI.
TASK_MODULES = ["trainer.task", "trainer.preprocessing", "components.serving_pusher", "components.anomalies_gate",
                "components.baseline_resolver", "orchestration.kfp_tasks", "orchestration.kfp_components",
                "orchestration.tfx_node", "inference.predict", "reporting.run_report", "ingest.spans",
                "pipeline.pipeline", "pipeline_runner"]


def test_wheel_installs_every_task_module_and_the_schema(tmp_path):
    source, wheels, site, elsewhere = tmp_path / "src", tmp_path / "wheels", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    # Built from a copy, so the build leaves nothing in the checkout.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info",
                                                                "__pycache__", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import importlib, json, sys\n"
             f"modules = {TASK_MODULES!r}\n"
             "print(json.dumps({m: importlib.import_module(m).__file__ for m in modules}))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    files = json.loads(result.stdout.strip().splitlines()[-1])
    outside = {m: f for m, f in files.items() if not pathlib.Path(f).is_relative_to(site)}
    assert not outside, f"imported from outside the installed wheel: {outside}"
    assert (site / "pipeline" / "schema" / "schema.pbtxt").is_file()
