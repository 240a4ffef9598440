"""The code fingerprint: every file TFX runs from this project by module path, and nothing else."""

import json
import shutil

import config as config_lib
from contract import metadata as node_ids
from pipeline import code_fingerprint as fingerprint
from pipeline import pipeline as pipeline_lib

CODE_VERSION_NODES = {node_ids.TRANSFORM, node_ids.TRAINER, node_ids.ANOMALIES_GATE,
                      node_ids.PUSHER}


def _relative(paths):
    return {p.relative_to(fingerprint.PROJECT_ROOT).as_posix() for p in paths}


def test_fingerprint_covers_the_modules_transform_trainer_and_components_import():
    files = _relative(fingerprint.code_files())
    # imported by the Trainer through config, contract and trainer.export, not only trainer/*.py
    assert {"config/__init__.py", "contract/__init__.py", "contract/features.py", "trainer/tflite.py",
            "trainer/task.py", "trainer/model.py", "trainer/export.py",
            "trainer/preprocessing.py", "components/anomalies_gate.py", "components/serving_pusher.py",
            "components/baseline_resolver.py"} <= files
    assert not any(f.startswith(("reporting/", "orchestration/", "tests/")) for f in files), files
    assert not any(f.startswith(("pipeline/", "inference/")) for f in files), files
    assert "pipeline_runner.py" not in files


def _copy_project(target):
    for name in ("contract", "config", "trainer", "pipeline", "inference", "components", "ingest", "reporting",
                 "orchestration"):
        shutil.copytree(fingerprint.PROJECT_ROOT / name, target / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(fingerprint.PROJECT_ROOT / "README.md", target / "README.md")


def test_a_change_to_code_the_trainer_runs_changes_the_fingerprint_and_a_readme_does_not(tmp_path):
    _copy_project(tmp_path)
    before = fingerprint.code_fingerprint(tmp_path)
    assert before == fingerprint.code_fingerprint(fingerprint.PROJECT_ROOT)
    (tmp_path / "README.md").write_text("changed")
    (tmp_path / "reporting" / "run_report.py").write_text("# changed\n")
    assert fingerprint.code_fingerprint(tmp_path) == before
    for changed in ("trainer/tflite.py", "config/__init__.py", "contract/features.py", "components/anomalies_gate.py"):
        path = tmp_path / changed
        original = path.read_text()
        path.write_text(original + "\n# changed\n")
        assert fingerprint.code_fingerprint(tmp_path) != before, changed
        path.write_text(original)


def test_the_fingerprint_is_a_parameter_of_every_node_that_runs_project_code(tmp_path):
    """TFX's cache key includes each node's parameters: a new fingerprint is a cache miss for exactly these."""
    from orchestration.engines import tfx_node

    pipeline = pipeline_lib.create_pipeline(
        config_lib.PipelineConfig(), examples_root=str(tmp_path / "examples"), pipeline_root=str(tmp_path / "root"),
        serving_dir=str(tmp_path / "serving"))
    expected = fingerprint.code_fingerprint()
    carrying = {program.node_id for program in tfx_node.node_programs(pipeline)
                if expected in json.dumps(json.loads(program.ir_json)["nodes"][0]["pipelineNode"].get("parameters"))}
    assert carrying == CODE_VERSION_NODES
