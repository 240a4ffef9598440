import socket
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from orchestration import kubeflow
from pipeline import pipeline as pipeline_lib
from pipeline.config import PipelineConfig
from tests.helpers import ROOT

IMAGE = "registry.example.com/cats-vs-dogs:7"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """Compiled with every socket connection refused: compiling needs no network."""
    path = str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access during compile")

    socket.socket.connect = refuse
    try:
        kubeflow.compile_package(PipelineConfig(), path, image=IMAGE, root="gs://bucket/cats",
                                 beam_args=kubeflow.kubeflow_beam_args(2), trainer_cpu=4, trainer_memory="16G")
    finally:
        socket.socket.connect = original
    return path


def test_package_parses_strictly_into_a_pipeline_spec(package):
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(yaml.safe_load(open(package)), spec, ignore_unknown_fields=False)
    assert spec.pipeline_info.name == PipelineConfig().name


def test_package_loads_with_kfps_component_loader(package):
    from kfp import components

    loaded = components.load_component_from_file(package)
    assert loaded.pipeline_spec.root.dag.tasks


def test_package_holds_every_component_of_the_local_pipeline_with_the_image(package):
    spec = yaml.safe_load(open(package))
    tasks = set(spec["root"]["dag"]["tasks"])
    local = pipeline_lib.create_pipeline(PipelineConfig(), examples_root="e", pipeline_root="p", serving_dir="s")
    for component in local.components:
        if component.id in pipeline_lib.LOCAL_ONLY_IDS:
            continue
        assert any(t == component.id or t.startswith(component.id + "-") for t in tasks), component.id
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values() if "container" in e}
    assert images == {IMAGE}
    trainer = executors[f"{pipeline_lib.TRAINER}_executor"]["container"]["resources"]
    assert (trainer["cpuLimit"], trainer["memoryLimit"]) == (4.0, 16.0)


def test_package_references_code_by_module_path_and_has_no_local_state(package):
    text = open(package).read()
    assert pipeline_lib.RUN_FN in text and pipeline_lib.PREPROCESSING_FN in text
    assert str(ROOT) not in text, "the package must not point into this checkout"
    assert "sqlite" not in text.lower()
    assert "gs://bucket/cats/serving_model" in text
    assert kubeflow.IMAGE_SCHEMA_PATH in text


def test_dockerfile_puts_the_schema_where_the_package_expects_it():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"WORKDIR {kubeflow.IMAGE_PROJECT_DIR}" in dockerfile and "COPY . ." in dockerfile
    assert "requirements/lock.txt" in dockerfile


def test_package_name_must_be_yaml(tmp_path):
    with pytest.raises(ValueError, match=".yaml"):
        kubeflow.compile_package(PipelineConfig(), str(tmp_path / "p.json"), image=IMAGE, root="gs://b",
                                 beam_args=[])


@pytest.mark.parametrize("command", [
    ["submit", "--package", "unused.yaml"],
    ["schedule", "--package", "unused.yaml", "--cron", "0 0 3 * * *"],
])
def test_unreachable_endpoint_is_a_clear_error(command):
    host = "http://127.0.0.1:9"  # discard port: nothing listens
    result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *command, "--host", host],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2
    assert f"cannot reach Kubeflow Pipelines at {host}" in result.stderr


def test_kfp_cron_needs_six_fields():
    with pytest.raises(ValueError, match="6 fields"):
        kubeflow.check_kfp_cron("0 3 * * *")
    kubeflow.check_kfp_cron("0 0 3 * * *")
