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


@pytest.mark.parametrize("settings", [{}, {"warm_start": True, "span_window": 3}, {"tune": True}])
def test_a_resolver_read_by_one_node_runs_in_its_task_and_no_dependency_is_lost(settings):
    from config import TuningConfig

    config = PipelineConfig()
    if settings.get("warm_start"):
        config = config.replace(warm_start=True, span_window=settings["span_window"])
    pipeline = pipeline_lib.create_pipeline(config, examples_root="/r/examples", pipeline_root="/r/pipeline_root",
                                            serving_dir="/r/serving_model",
                                            tuning=TuningConfig() if settings.get("tune") else None)
    programs = tfx_node.node_programs(pipeline)
    tasks = tfx_node.task_programs(programs)
    by_task = {task.node.node_id: task for task in tasks}
    ran = [p.node_id for task in tasks for p in (*task.resolvers, task.node)]
    assert sorted(ran) == sorted(p.node_id for p in programs), "every node once"
    readers = {p.node_id: {q.node_id for q in programs if p.node_id in q.upstream} for p in programs}
    started = set()
    for task in tasks:
        for resolver in task.resolvers:
            assert resolver.node_id in node_ids.RESOLVER_IDS and readers[resolver.node_id] == {task.node.node_id}
        assert set(task.upstream) <= set(by_task) and set(task.upstream) <= started, "waits only for tasks before it"
        # what the node and its resolvers waited for, a folded resolver standing for what it waited for
        needed = {u for p in (task.node, *task.resolvers) for u in p.upstream} - {r.node_id for r in task.resolvers}
        assert set(task.upstream) == needed
        started.add(task.node.node_id)
    kept = {task.node.node_id for task in tasks} & node_ids.RESOLVER_IDS
    assert all(len(readers[resolver]) > 1 for resolver in kept), "a resolver keeps a task only for several readers"
    if settings.get("span_window"):
        assert node_ids.SPAN_WINDOW_RESOLVER in kept


@pytest.fixture
def sqlite_run(tmp_path):
    """A root with its lease held by run `run-1`, its programs compiled against a SQLite store there."""
    from orchestration.root import lease

    root = tmp_path / "root"
    root.mkdir()
    pipeline = pipeline_lib.create_pipeline(PipelineConfig(), examples_root=str(root / "examples"),
                                            pipeline_root=str(root / "pipeline_root"),
                                            serving_dir=str(root / "serving_model"), scope=str(root))
    programs = {p.node_id: p.ir_json for p in tfx_node.node_programs(pipeline)}
    held = lease.acquire(root, "run-1", process=True)
    yield {"root": str(root), "store": f"sqlite://{root / 'metadata.sqlite'}", "programs": programs}
    lease.release(root, held.run_id)


def _executions(store, node_id):
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    opened = metadata_store.MetadataStore(tfx_node.connection_config(store))
    node = opened.get_context_by_type_and_name("node", f"{PipelineConfig().name}.{node_id}")
    return [metadata_store_pb2.Execution.State.Name(e.last_known_state)
            for e in opened.get_executions_by_context(node.id)] if node else []


def test_a_resolver_that_completed_in_a_killed_attempt_of_its_readers_task_is_not_run_again(sqlite_run):
    from orchestration.engines import kfp_tasks

    said = []
    resolver = sqlite_run["programs"][node_ids.HYPERPARAMETERS_RESOLVER]
    assert kfp_tasks._run_one(resolver, "run-1", sqlite_run["store"], sqlite_run["root"], said.append,
                              once=True) == "executed"
    assert kfp_tasks._run_one(resolver, "run-1", sqlite_run["store"], sqlite_run["root"], said.append,
                              once=True) == "done earlier"
    resolver_id = node_ids.HYPERPARAMETERS_RESOLVER
    assert said == [f"{resolver_id}: executed", f"{resolver_id}: done earlier"]
    assert _executions(sqlite_run["store"], node_ids.HYPERPARAMETERS_RESOLVER) == ["COMPLETE"]


def test_a_resolver_whose_resolution_fails_fails_its_task_before_its_reader_runs(sqlite_run, monkeypatch, capsys):
    """TFX's resolver handler records a failed resolution (any error of a strategy or of the store) as a FAILED
    execution and returns; the reader's inputs from it are optional, so an Evaluator would run with no baseline.
    The task ends instead, naming why, the failure recorded for the report."""
    from components import tuner
    from contract import errors
    from orchestration.engines import kfp_tasks

    def fails(self, store, input_dict):
        raise RuntimeError("the store answered nonsense")

    monkeypatch.setattr(tuner.NewestStrategy, "resolve_artifacts", fails)
    programs = sqlite_run["programs"]
    with pytest.raises(SystemExit) as ended:
        kfp_tasks.run_node(programs[node_ids.TRAINER], "run-1", sqlite_run["store"], sqlite_run["root"],
                           say=print, resolver_programs=[programs[node_ids.HYPERPARAMETERS_RESOLVER]])
    assert ended.value.code == errors.FAILED
    why = (f"NodeFailedError: {node_ids.HYPERPARAMETERS_RESOLVER} could not resolve its inputs: RuntimeError: the "
           "store answered nonsense")
    assert f"{node_ids.HYPERPARAMETERS_RESOLVER} failed: {why}" in capsys.readouterr().err
    assert _executions(sqlite_run["store"], node_ids.TRAINER) == [], "the Trainer never ran"
    record = kfp_tasks._read_records(sqlite_run["root"], "run-1")[node_ids.HYPERPARAMETERS_RESOLVER]
    assert record["error"] == why
    # outside failed_resolutions_raise, TFX's own handler records the failure and returns
    from tfx.orchestration.portable import resolver_node_handler
    assert resolver_node_handler.inputs_utils.__name__ == "tfx.orchestration.portable.inputs_utils"
