"""The pieces a Kubeflow task uses to run one TFX node: node programs, store, root and run id checks."""

import json
import time

import pytest
from google.protobuf import json_format
from tfx.proto.orchestration import pipeline_pb2

from config import PipelineConfig
from contract import metadata as node_ids
from orchestration.engines import tfx_node
from pipeline import pipeline as pipeline_lib
from tests.helpers import DEFAULT_NODE_IDS


@pytest.fixture(scope="module")
def programs():
    pipeline = pipeline_lib.create_pipeline(PipelineConfig(), examples_root="/r/examples",
                                            pipeline_root="/r/pipeline_root", serving_dir="/r/serving_model")
    return tfx_node.node_programs(pipeline)


def test_each_program_holds_one_node_and_only_its_own_specs(programs):
    assert [p.node_id for p in programs][0] == node_ids.EXAMPLE_GEN
    assert {p.node_id for p in programs} == set(DEFAULT_NODE_IDS)
    seen = set()
    for program in programs:
        assert set(program.upstream) <= seen, f"{program.node_id} comes before one of its upstream nodes"
        seen.add(program.node_id)
        ir = json_format.Parse(program.ir_json, pipeline_pb2.Pipeline())
        assert [n.pipeline_node.node_info.id for n in ir.nodes] == [program.node_id]
        deployment = pipeline_pb2.IntermediateDeploymentConfig()
        ir.deployment_config.Unpack(deployment)
        assert set(deployment.executor_specs) <= {program.node_id}
        assert set(deployment.custom_driver_specs) <= {program.node_id}
        assert ir.runtime_spec.pipeline_root.runtime_parameter.default_value.string_value == "/r/pipeline_root"
    trainer = next(p for p in programs if p.node_id == node_ids.TRAINER)
    assert pipeline_lib.RUN_FN in trainer.ir_json


def test_example_gen_keeps_its_span_resolving_driver(programs):
    example_gen = json.loads(programs[0].ir_json)
    assert example_gen["nodes"][0]["pipelineNode"]["nodeInfo"]["id"] == node_ids.EXAMPLE_GEN
    drivers = example_gen["deploymentConfig"]["customDriverSpecs"]
    # TFX's file-based driver, taught that a span may lack its test split
    assert drivers[node_ids.EXAMPLE_GEN]["classPath"] == "components.judged_split.SpanSplitsDriver"


@pytest.mark.parametrize("store, expected", [
    ("grpc://metadata-grpc-service.kubeflow:8080", ("metadata-grpc-service.kubeflow", 8080)),
    ("sqlite:///tmp/m.sqlite", "/tmp/m.sqlite"),
])
def test_connection_config_from_a_store_uri(store, expected):
    config = tfx_node.connection_config(store)
    got = (config.host, config.port) if store.startswith("grpc") else config.sqlite.filename_uri
    assert got == expected


@pytest.mark.parametrize("store", ["grpc://nohost", "mysql://db:3306", "sqlite:relative.db"])
def test_malformed_store_is_named(store):
    with pytest.raises(tfx_node.NodeTaskError, match="expected grpc://HOST:PORT"):
        tfx_node.connection_config(store)


def test_unreachable_store_is_named_quickly():
    started = time.monotonic()
    with pytest.raises(tfx_node.NodeTaskError, match="cannot reach the ML Metadata store grpc://127.0.0.1:9"):
        tfx_node.check_store("grpc://127.0.0.1:9")  # discard port: nothing listens
    assert time.monotonic() - started < 60


def test_root_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(tfx_node.NodeTaskError, match=f"cannot write to {blocker}/root"):
        tfx_node.check_writable(str(blocker / "root"))
    tfx_node.check_writable(str(tmp_path / "fine"))
    assert list((tmp_path / "fine").iterdir()) == [], "the probe file is removed"


def test_run_id_falls_back_to_the_pods_label(monkeypatch):
    assert tfx_node.resolve_run_id("run-123") == "run-123"
    monkeypatch.setenv("KFP_RUN_ID", "from-label")
    assert tfx_node.resolve_run_id("{{$.pipeline_job_uuid}}") == "from-label"
    monkeypatch.delenv("KFP_RUN_ID")
    with pytest.raises(tfx_node.NodeTaskError, match="no run id"):
        tfx_node.resolve_run_id("{{$.pipeline_job_uuid}}")
