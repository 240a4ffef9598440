"""Two Kubeflow deployments (staging, production: two roots, one pipeline name) on one ML Metadata store, as on a
cluster whose metadata service both use: each package's resolvers read only its own root's artifacts.

The store is SQLite, standing in for the cluster's gRPC service as the rehearsal's does; the artifacts are
registered in the pipeline's context the way TFX's launcher records them; the hyperparameters' Resolver is
resolved by TFX's own input resolution from the compiled package's IR, the other strategies over the store's
artifacts."""

import dataclasses

import pytest
from ml_metadata.proto import metadata_store_pb2 as pb
from tfx.orchestration import metadata as tfx_metadata
from tfx.orchestration.portable import inputs_utils
from tfx.proto import range_config_pb2
from tfx.types import artifact_utils, standard_artifacts

from components.baseline_resolver import LatestBlessedBeforeStrategy, RootSpanRangeStrategy
from components.tuner import NewestStrategy
from config import PipelineConfig
from contract import metadata
from orchestration.engines import kubeflow

STAGING, PRODUCTION = "/mnt/pipeline/staging", "/mnt/pipeline/production"
# A root that begins like another's is not under it.
NEIGHBOUR = "/mnt/pipeline/staging-old"
NAME = PipelineConfig().name


class Store:
    """A SQLite ML Metadata store where outputs are recorded in the pipeline's context and their node's."""

    def __init__(self, path):
        self.config = metadata.connection_config(metadata.sqlite_store(path))
        self.store = metadata.open_store(metadata.sqlite_store(path))
        pipeline_type = self.store.put_context_type(pb.ContextType(name="pipeline"))
        self.node_type = self.store.put_context_type(pb.ContextType(name="node"))
        [pipeline_id] = self.store.put_contexts([pb.Context(type_id=pipeline_type, name=NAME)])
        self.pipeline = self.store.get_contexts_by_id([pipeline_id])[0]
        self.nodes = {}

    def _node(self, node_id):
        if node_id not in self.nodes:
            [context_id] = self.store.put_contexts([pb.Context(type_id=self.node_type, name=f"{NAME}.{node_id}")])
            self.nodes[node_id] = self.store.get_contexts_by_id([context_id])[0]
        return self.nodes[node_id]

    def output(self, node_id, key, artifact, uri, **custom):
        """Records `artifact` (a TFX artifact of the standard types) at `uri` as `node_id`'s output `key`."""
        type_id = self.store.put_artifact_type(artifact.artifact_type)
        proto = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for name, value in custom.items():
            proto.custom_properties[name].int_value = value
        execution_type = self.store.put_execution_type(pb.ExecutionType(name=node_id))
        event = pb.Event(type=pb.Event.OUTPUT, path=pb.Event.Path(steps=[pb.Event.Path.Step(key=key),
                                                                         pb.Event.Path.Step(index=0)]))
        _, [artifact_id], _ = self.store.put_execution(
            pb.Execution(type_id=execution_type, last_known_state=pb.Execution.COMPLETE), [(proto, event)],
            [self.pipeline, self._node(node_id)])
        return artifact_id

    def artifacts(self, artifact_class):
        """The store's artifacts of a type as TFX artifacts: what a channel of the pipeline's context gives a
        strategy."""
        [artifact_type] = self.store.get_artifact_types_by_id([self.store.get_artifact_type(
            artifact_class.TYPE_NAME).id])
        return [artifact_utils.deserialize_artifact(artifact_type, a)
                for a in self.store.get_artifacts_by_type(artifact_class.TYPE_NAME)]


def _search(store, root):
    return store.output(metadata.TUNER, "best_hyperparameters", standard_artifacts.HyperParameters(),
                        f"{root}/pipeline_root/{metadata.TUNER}/best_hyperparameters/1")


def _resolve_hyperparameters(store, root):
    """What the hyperparameters' Resolver of `root`'s Kubeflow package resolves, by TFX's own input resolution
    of the package's compiled node."""
    from tfx.dsl.compiler import compiler

    deployment = kubeflow.Deployment(image="example.com/image:1", root=root, metadata_store="sqlite:///unused")
    ir = compiler.Compiler().compile(kubeflow.tfx_pipeline(PipelineConfig(), deployment))
    [node] = [n.pipeline_node for n in ir.nodes if n.pipeline_node.node_info.id == metadata.HYPERPARAMETERS_RESOLVER]
    with tfx_metadata.Metadata(store.config) as handle:
        resolved = inputs_utils.resolve_input_artifacts(pipeline_node=node, metadata_handle=handle)
    return [a.uri for inputs in resolved for a in inputs["hyperparameters"]]


def test_a_package_takes_its_own_roots_search_not_a_newer_one_of_another_root(tmp_path):
    store = Store(tmp_path / "metadata.sqlite")
    staging = _search(store, STAGING)
    _search(store, PRODUCTION)  # newer, in the same pipeline context
    _search(store, NEIGHBOUR)
    assert _resolve_hyperparameters(store, STAGING) == [store.store.get_artifacts_by_id([staging])[0].uri]
    assert _resolve_hyperparameters(store, PRODUCTION) == [f"{PRODUCTION}/pipeline_root/{metadata.TUNER}/"
                                                           "best_hyperparameters/1"]


def test_a_root_that_never_searched_gets_no_search_though_another_root_did(tmp_path):
    store = Store(tmp_path / "metadata.sqlite")
    _search(store, PRODUCTION)
    assert _resolve_hyperparameters(store, STAGING) == []


def test_without_a_root_the_shared_context_mixes_roots(tmp_path):
    """What the strategies did before they were given the root: another root's newest search."""
    store = Store(tmp_path / "metadata.sqlite")
    _search(store, STAGING)
    _search(store, PRODUCTION)
    [newest] = NewestStrategy().resolve_artifacts(None, {"h": store.artifacts(standard_artifacts.HyperParameters)})["h"]
    assert newest.uri.startswith(PRODUCTION)


def _blessed_model(store, root, run):
    model = store.output(metadata.TRAINER, "model", standard_artifacts.Model(),
                         f"{root}/pipeline_root/{metadata.TRAINER}/model/{run}")
    store.output(metadata.EVALUATOR, "blessing", standard_artifacts.ModelBlessing(),
                 f"{root}/pipeline_root/{metadata.EVALUATOR}/blessing/{run}",
                 **{metadata.BLESSED: 1, metadata.CURRENT_MODEL_ID: model})
    return model


def test_the_baseline_and_warm_start_are_this_roots_blessed_model(tmp_path):
    store = Store(tmp_path / "metadata.sqlite")
    staging_model = _blessed_model(store, STAGING, 1)
    production_model = _blessed_model(store, PRODUCTION, 2)
    candidate_id = store.output(metadata.TRAINER, "model", standard_artifacts.Model(),
                                f"{STAGING}/pipeline_root/{metadata.TRAINER}/model/3")
    models = store.artifacts(standard_artifacts.Model)
    history = {"before": [m for m in models if m.id == candidate_id], "model": models,
               "model_blessing": store.artifacts(standard_artifacts.ModelBlessing), "pushed_model": []}
    scoped = LatestBlessedBeforeStrategy(root=STAGING).resolve_artifacts(None, history)
    assert [m.id for m in scoped["model"]] == [staging_model]
    assert [m.id for m in LatestBlessedBeforeStrategy().resolve_artifacts(None, history)["model"]] == \
        [production_model], "unscoped, production's model is staging's baseline"


def test_the_span_window_takes_this_roots_spans(tmp_path):
    store = Store(tmp_path / "metadata.sqlite")
    for root, span in ((STAGING, 1), (PRODUCTION, 2), (STAGING, 2), (PRODUCTION, 3)):
        store.output(metadata.EXAMPLE_GEN, "examples", standard_artifacts.Examples(),
                     f"{root}/pipeline_root/{metadata.EXAMPLE_GEN}/examples/{span}", span=span)
    window = range_config_pb2.RangeConfig(rolling_range=range_config_pb2.RollingRange(num_spans=2))
    examples = {"examples": store.artifacts(standard_artifacts.Examples)}
    resolved = RootSpanRangeStrategy(window, root=STAGING).resolve_artifacts(None, examples)["examples"]
    assert sorted(a.uri for a in resolved) == [f"{STAGING}/pipeline_root/{metadata.EXAMPLE_GEN}/examples/{span}"
                                               for span in (1, 2)]


@pytest.mark.parametrize("uri, inside", [(f"{STAGING}/pipeline_root/x", True), (f"{NEIGHBOUR}/pipeline_root/x", False),
                                         (STAGING, False), ("", False), ("gs://b/staging/pipeline_root/x", False)])
def test_under_root_is_a_folder_test_not_a_prefix_test(uri, inside):
    assert metadata.under_root(uri, STAGING + "/") is inside


def test_every_resolver_of_the_kubeflow_package_is_given_its_root():
    """A resolver added later without the root would read every deployment's artifacts."""
    from pipeline import pipeline as pipeline_lib

    deployment = kubeflow.Deployment(image="example.com/image:1", root=STAGING, metadata_store="sqlite:///unused")
    config = dataclasses.replace(PipelineConfig(), data=dataclasses.replace(PipelineConfig().data, span_window=3),
                                 training=dataclasses.replace(PipelineConfig().training, warm_start=True))
    resolvers = [n for n in kubeflow.tfx_pipeline(config, deployment).components
                 if isinstance(n, pipeline_lib.Resolver)]
    assert {n.id for n in resolvers} == set(metadata.RESOLVER_IDS)
    for node in resolvers:
        assert node._config.get("root") == STAGING, node.id


def test_models_history_and_rollback_list_only_this_roots_pushes(tmp_path):
    """Both roots push versions 1 and 2: each root's history (what `models` and `rollback` read) is its own."""
    from orchestration.run import reconcile
    from reporting import model_history

    store = Store(tmp_path / "metadata.sqlite")
    roots = {name: str(tmp_path / name) for name in ("staging", "production", "staging-old")}
    for name, root in roots.items():
        for version in (1, 2):
            model = _blessed_model(store, root, f"{name}{version}")
            reconcile.record_push(store.store, NAME, "ServingPusher", model, version, f"{root}/serving/{version}",
                                  {"note": name})
    for name, root in roots.items():
        versions = model_history.pushed_versions(store.store, f"{root}/serving", scoped=True)
        assert [(v.version, v.path) for v in versions] == [(1, f"{root}/serving/1"), (2, f"{root}/serving/2")], name


def test_a_local_roots_own_store_is_not_scoped_so_a_moved_root_keeps_its_history(tmp_path):
    """A local root's store holds only its own pushes, recorded under the path the root had then: after the root
    is moved or restored elsewhere, `models`, `rollback` and `monitor` still find them (and reconcile records
    nothing again)."""
    from orchestration.run import reconcile
    from reporting import model_history

    store = Store(tmp_path / "metadata.sqlite")
    before = str(tmp_path / "before-the-move")
    for version in (1, 2):
        model = _blessed_model(store, before, f"v{version}")
        reconcile.record_push(store.store, NAME, "ServingPusher", model, version, f"{before}/serving/{version}", {})
    moved = str(tmp_path / "moved" / "serving")
    assert [v.version for v in model_history.pushed_versions(store.store, moved)] == [1, 2]
    assert model_history.pushed_versions(store.store, moved, scoped=True) == []


def test_a_moved_local_roots_run_reads_its_outputs_where_the_root_is_now_and_keeps_its_baseline(tmp_path):
    """A local root moved with its store: its records named every output under the old path, so the next run
    marked them all DELETED as gone from disk and judged its candidate against no baseline (a worse model could
    ship). The run now names them where the root is, before it looks for what is gone; `models` reads them there
    before any run has."""
    from orchestration.root import store_health
    from orchestration.run import reconcile
    from reporting import model_history

    store = Store(tmp_path / "metadata.sqlite")
    before, after = str(tmp_path / "before"), str(tmp_path / "after")
    model = _blessed_model(store, before, 1)
    gone = store.output(metadata.TRANSFORM, "transform_graph", standard_artifacts.TransformGraph(),
                        f"{before}/pipeline_root/{metadata.TRANSFORM}/transform_graph/1")  # not moved with it
    reconcile.record_push(store.store, NAME, "ServingPusher", model, 1, f"{before}/serving_model/1", {})
    for place in (f"pipeline_root/{metadata.TRAINER}/model/1", f"pipeline_root/{metadata.EVALUATOR}/blessing/1",
                  "serving_model/1"):
        (tmp_path / "after" / place).mkdir(parents=True)
    [listed] = model_history.pushed_versions(store.store, f"{after}/serving_model")  # read-only: before any run
    assert listed.path == f"{after}/serving_model/1" and listed.model_uri.startswith(f"{after}/pipeline_root/")

    # the root it was copied from still holds the output the copy does not: never read from there
    (tmp_path / "before" / "pipeline_root" / metadata.TRANSFORM / "transform_graph" / "1").mkdir(parents=True)
    # the model, its blessing and its push read here; the graph the copy does not hold never read
    assert reconcile.follow_a_moved_root(store.store, after, None)[0] == {before: [3, 1]}
    assert store_health.mark_missing(store.store) == [], "not taken for back where the other root holds it"
    uris = {a.id: (a.uri, a.state) for a in store.store.get_artifacts()}
    assert uris[model] == (f"{after}/pipeline_root/{metadata.TRAINER}/model/1", pb.Artifact.LIVE)
    assert uris[gone] == (f"{before}/pipeline_root/{metadata.TRANSFORM}/transform_graph/1", pb.Artifact.DELETED)
    [pushed] = store.store.get_artifacts_by_type("PushedModel")
    assert pushed.custom_properties[metadata.PUSHED_DESTINATION].string_value == f"{after}/serving_model/1"
    history = {"before": [], "model": store.artifacts(standard_artifacts.Model),
               "model_blessing": store.artifacts(standard_artifacts.ModelBlessing), "pushed_model": []}
    [baseline] = LatestBlessedBeforeStrategy().resolve_artifacts(None, history)["model"]
    assert baseline.id == model
    # a push record keeps the model's place at its push: the model is found by it where the root is now
    assert reconcile._model_by_uri(store.store, f"{before}/pipeline_root/{metadata.TRAINER}/model/1",
                                   f"{after}/serving_model").id == model
    assert reconcile.follow_a_moved_root(store.store, after, None)[0] == {}, "once"
    # the part copied later is read here from then on
    (tmp_path / "after" / "pipeline_root" / metadata.TRANSFORM / "transform_graph" / "1").mkdir(parents=True)
    assert reconcile.follow_a_moved_root(store.store, after, None)[0] == {before: [1, 0]}
    [graph] = store.store.get_artifacts_by_id([gone])
    assert graph.state == pb.Artifact.LIVE and graph.uri.startswith(after)


def test_a_root_moved_into_a_folder_of_its_own_is_told_from_one_that_stayed(tmp_path):
    """x/y/r moved to x/y: its records' paths begin with the new root's, yet are another root's places."""
    from orchestration.run import reconcile

    store = Store(tmp_path / "metadata.sqlite")
    before, after = str(tmp_path / "x" / "y" / "r"), str(tmp_path / "x" / "y")
    model = _blessed_model(store, before, 1)
    for place in (f"pipeline_root/{metadata.TRAINER}/model/1", f"pipeline_root/{metadata.EVALUATOR}/blessing/1"):
        (tmp_path / "x" / "y" / place).mkdir(parents=True)
    assert reconcile.follow_a_moved_root(store.store, after, None)[0] == {before: [2, 0]}
    [found] = store.store.get_artifacts_by_id([model])
    assert found.uri == f"{after}/pipeline_root/{metadata.TRAINER}/model/1"


@pytest.mark.parametrize("recorded, found", [
    ("/old/root/pipeline_root/Trainer/model/9", "pipeline_root/Trainer/model/9"),
    ("/old/pipeline_root/x/serving_model/3", "serving_model/3"),  # the last of the root's folders on the path
    ("/old/root/serving_model/7", None),  # not under the root now
    ("{root}/r/pipeline_root/Trainer/model/9", "pipeline_root/Trainer/model/9"),  # moved into a folder of its own
    ("/old/root/elsewhere/1", None), ("gs://b/pipeline_root/T/m/1", None), ("relative/pipeline_root/T/m/1", None),
])
def test_moved_from_names_a_recorded_place_under_the_root_only_where_the_root_holds_it(tmp_path, recorded, found):
    for place in ("pipeline_root/Trainer/model/9", "serving_model/3", "elsewhere/1"):
        (tmp_path / place).mkdir(parents=True)
    recorded = recorded.format(root=tmp_path)
    assert metadata.moved_from(recorded, str(tmp_path)) == (str(tmp_path / found) if found else None)
    assert metadata.moved_from(str(tmp_path / "serving_model" / "3"), str(tmp_path)) is None, "already there"


def _unfinished(store, root, run, node_id, uri):
    """A RUNNING execution of `run` (a pipeline_run context), and a LIVE output of it at `uri` (no files)."""
    run_type = store.store.put_context_type(pb.ContextType(name="pipeline_run"))
    [run_context] = store.store.put_contexts([pb.Context(type_id=run_type, name=run)])
    execution_type = store.store.put_execution_type(pb.ExecutionType(name=node_id))
    statistics = store.store.put_artifact_type(standard_artifacts.ExampleStatistics().artifact_type)
    store.store.put_execution(
        pb.Execution(type_id=execution_type, last_known_state=pb.Execution.RUNNING),
        [(pb.Artifact(type_id=statistics, uri=uri, state=pb.Artifact.LIVE), pb.Event(type=pb.Event.OUTPUT))],
        [store.pipeline, store._node(node_id), store.store.get_contexts_by_id([run_context])[0]])


def test_a_run_cancels_and_marks_missing_only_what_is_its_roots(tmp_path):
    """The first task of a run cancels what earlier runs left unfinished and marks outputs whose files are gone:
    another root's run is working (its pod sees another volume), and is left alone."""
    from contract.layout import RunLayout
    from orchestration.run import lifecycle

    store = Store(tmp_path / "metadata.sqlite")
    staging, production = str(tmp_path / "staging"), str(tmp_path / "production")
    _unfinished(store, staging, "killed-staging-run", metadata.TRAINER, f"{staging}/pipeline_root/gone/1")
    _unfinished(store, production, "working-production-run", metadata.EVALUATOR,
                f"{production}/pipeline_root/elsewhere/2")
    (tmp_path / "staging" / "runs").mkdir(parents=True)
    for run in ("killed-staging-run", "this-run"):
        (tmp_path / "staging" / "runs" / run).mkdir()  # each run's first task writes its record there
    assert RunLayout(staging).run_dir("killed-staging-run") == f"{staging}/runs/killed-staging-run"

    canceled, missing = lifecycle.look_after_store(store.store, "this-run", staging)
    assert canceled == [metadata.TRAINER]
    assert missing == [f"ExampleStatistics {staging}/pipeline_root/gone/1"]
    states = {e.type_id: e.last_known_state for e in store.store.get_executions()}
    assert sorted(states.values()) == sorted([pb.Execution.CANCELED, pb.Execution.RUNNING])
    production_output = [a for a in store.store.get_artifacts() if a.uri.startswith(production)]
    assert [a.state for a in production_output] == [pb.Artifact.LIVE]


def test_the_previous_statistics_are_this_roots(tmp_path):
    from components.baseline_resolver import LatestBeforeStrategy

    store = Store(tmp_path / "metadata.sqlite")
    ours = store.output(metadata.STATISTICS_GEN, "statistics", standard_artifacts.ExampleStatistics(),
                        f"{STAGING}/pipeline_root/{metadata.STATISTICS_GEN}/statistics/1")
    store.output(metadata.STATISTICS_GEN, "statistics", standard_artifacts.ExampleStatistics(),
                 f"{PRODUCTION}/pipeline_root/{metadata.STATISTICS_GEN}/statistics/2")
    examples = store.output(metadata.EXAMPLE_GEN, "examples", standard_artifacts.Examples(),
                            f"{STAGING}/pipeline_root/{metadata.EXAMPLE_GEN}/examples/3")
    inputs = {"before": [a for a in store.artifacts(standard_artifacts.Examples) if a.id == examples],
              "artifact": store.artifacts(standard_artifacts.ExampleStatistics)}
    assert [a.id for a in LatestBeforeStrategy(root=STAGING).resolve_artifacts(None, inputs)["artifact"]] == [ours]
