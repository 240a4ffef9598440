"""The Kubeflow package against the rules of the open-source KFP 2.x backend, offline.

The rules, read in kubeflow/pipelines' backend: only schema 2.1.0 is accepted
(apiserver/template/v2_template.go); only container and importer executors
compile (v2/compiler/visitor.go); no backend code runs lifecycle hooks. Submit
and schedule go through the real kfp client to a fake KFP API on loopback.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from config import PipelineConfig, TuningConfig, with_overrides
from contract import accelerators, layout
from contract import metadata as node_ids
from orchestration.engines import kfp_runs, kubeflow, vertex
from pipeline import pipeline as pipeline_lib
from tests.helpers import ROOT, cli_in_process

IMAGE = "registry.example.com/cats-vs-dogs:7"


def _compile_offline(path, deployment, config=None, **search):
    """Compiles with every socket connection refused: compiling needs no network. `search`: compile_package's
    tuning and fixed_settings."""
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access during compile")

    socket.socket.connect = refuse
    try:
        return kubeflow.compile_package(config or PipelineConfig(), str(path), deployment, **search)
    finally:
        socket.socket.connect = original


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    deployment = kubeflow.Deployment(image=IMAGE, root="gs://bucket/cats", data_dir="gs://bucket/images",
                                     trainer_cpu="4", trainer_memory="16G", trainer_accelerator="nvidia.com/gpu",
                                     trainer_accelerator_count=2)
    return _compile_offline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml", deployment)


@pytest.fixture(scope="module")
def tuned_package(tmp_path_factory):
    """`compile --tune --tune-trials 3` with the Trainer's resources and GPUs of `package`."""
    deployment = kubeflow.Deployment(image=IMAGE, root="gs://bucket/cats", data_dir="gs://bucket/images",
                                     trainer_cpu="4", trainer_memory="16G", trainer_accelerator="nvidia.com/gpu",
                                     trainer_accelerator_count=2)
    return _compile_offline(tmp_path_factory.mktemp("kfp") / "tuned.yaml", deployment,
                            tuning=TuningConfig(trials=3), fixed_settings=("dropout",))


@pytest.fixture(scope="module")
def pvc_package(tmp_path_factory):
    deployment = kubeflow.Deployment(image=IMAGE, root="/mnt/pipeline/cats", data_dir="/mnt/pipeline/images",
                                     pvc="cats-data")
    return _compile_offline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml", deployment)


def _documents(package):
    with open(package) as f:
        return list(yaml.safe_load_all(f))


def test_package_is_what_the_kfp_backend_runs(package):
    spec = _documents(package)[0]
    assert spec["schemaVersion"] == "2.1.0"
    executors = spec["deploymentSpec"]["executors"]
    assert executors and all(set(e) == {"container"} for e in executors.values()), \
        "only container executors: the backend compiles nothing else here"
    assert all(e["container"]["image"] == IMAGE for e in executors.values())
    assert "lifecycle" not in open(package).read()
    tasks = spec["root"]["dag"]["tasks"]
    for name, task in tasks.items():
        assert set(task.get("dependentTasks", [])) <= set(tasks), name
        assert not task.get("cachingOptions", {}).get("enableCache"), f"KFP's cache must be off for {name}"


def test_package_parses_strictly_and_loads_with_kfps_loader(package):
    from kfp import components

    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(_documents(package)[0], spec, ignore_unknown_fields=False)
    assert spec.pipeline_info.name == PipelineConfig().name
    loaded = components.load_component_from_file(package)
    assert set(loaded.pipeline_spec.root.dag.tasks) == set(_documents(package)[0]["root"]["dag"]["tasks"])


def _run_group(spec):
    """(the exit handler's group task at the root, the tasks inside it)."""
    (group,) = [name for name, task in spec["root"]["dag"]["tasks"].items() if name != layout.REPORT_TASK]
    component = spec["root"]["dag"]["tasks"][group]["componentRef"]["name"]
    return group, spec["components"][component]["dag"]["tasks"]


def _resolver_ids(task) -> list[str]:
    """The ids of the resolvers a node's task runs before its node, in order."""
    programs = task["inputs"]["parameters"]["resolver_programs"]["runtimeValue"]["constant"]
    return [n["pipelineNode"]["nodeInfo"]["id"] for ir in programs for n in json.loads(ir)["nodes"]]


def test_one_task_per_node_of_create_pipeline_in_its_dependency_order_a_resolver_in_its_readers(package):
    from orchestration.engines import tfx_node

    spec = _documents(package)[0]
    _, tasks = _run_group(spec)
    local = pipeline_lib.create_pipeline(PipelineConfig(), examples_root="e", pipeline_root="p", serving_dir="s")
    programs = tfx_node.node_programs(local)
    # each resolver is read by one node: it runs in that node's task, just before it (no pod of its own)
    readers = {node_ids.PREVIOUS_STATISTICS_RESOLVER: node_ids.ANOMALIES_GATE,
               node_ids.HYPERPARAMETERS_RESOLVER: node_ids.TRAINER, node_ids.BASELINE_RESOLVER: node_ids.EVALUATOR}
    assert {p.node_id for p in programs} & node_ids.RESOLVER_IDS == set(readers)
    # gs:// root: KServe copies it once, so a rollout task follows the Pusher (test_the_rollout_task_...)
    assert {p.node_id.lower() for p in programs if p.node_id not in readers} | {layout.INGEST_TASK,
                                                                                 layout.ROLLOUT_TASK} == set(tasks)
    by_id = {p.node_id: p for p in programs}
    for program in programs:
        if program.node_id in readers:
            continue
        task = tasks[program.node_id.lower()]
        resolvers = [resolver for resolver, reader in readers.items() if reader == program.node_id]
        assert _resolver_ids(task) == resolvers, program.node_id
        waits_for = {u for node in (program.node_id, *resolvers) for u in by_id[node].upstream} - set(resolvers)
        assert set(task["dependentTasks"]) == ({u.lower() for u in waits_for} or {layout.INGEST_TASK}), program.node_id
        assert not waits_for & set(readers), "no task waits for a resolver's"
        node_ir = json.loads(task["inputs"]["parameters"]["node_program"]["runtimeValue"]["constant"])
        assert [n["pipelineNode"]["nodeInfo"]["id"] for n in node_ir["nodes"]] == [program.node_id]
        carried = task["inputs"]["parameters"]["resolver_programs"]["runtimeValue"]["constant"]
        assert all(len(json.loads(ir)["nodes"]) == 1 for ir in carried), "a program per resolver"
    report = spec["root"]["dag"]["tasks"][layout.REPORT_TASK]
    node_ids_reported = report["inputs"]["parameters"]["node_ids"]["runtimeValue"]["constant"]
    assert node_ids_reported == [p.node_id for p in programs], "the report reads every node, resolvers too"


def test_the_report_is_the_exit_handler_of_every_other_task(package):
    spec = _documents(package)[0]
    group, _ = _run_group(spec)
    root_tasks = spec["root"]["dag"]["tasks"]
    assert set(root_tasks) == {group, layout.REPORT_TASK}
    report = root_tasks[layout.REPORT_TASK]
    assert report["dependentTasks"] == [group]
    assert report["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}


def test_the_rollout_task_follows_the_pusher_on_a_gs_root_only(package, pvc_package):
    """KServe copies a gs:// root into its pod once: after the Pusher, a task starts the InferenceService's new
    revision (orchestration.engines.kfp_tasks.rollout). A PVC is polled: no such task."""
    _, tasks = _run_group(_documents(package)[0])
    rollout = tasks[layout.ROLLOUT_TASK]
    assert rollout["dependentTasks"] == [node_ids.PUSHER.lower()]
    constants = {name: value["runtimeValue"]["constant"] for name, value in rollout["inputs"]["parameters"].items()
                 if "runtimeValue" in value}
    assert constants["serving"] == {"name": "cats-vs-dogs", "namespace": "default"}
    assert constants["root"] == "gs://bucket/cats"
    assert rollout["retryPolicy"]["maxRetryCount"] == kubeflow.TASK_RETRIES, "an unreachable API is tried again"
    assert layout.ROLLOUT_TASK not in _run_group(_documents(pvc_package)[0])[1]
    no_rollout = kubeflow.Deployment(image=IMAGE, root="gs://bucket/cats", serving=None)
    assert not no_rollout.rolls_out


def test_trainer_and_beam_tasks_are_retried_with_backoff(package):
    spec = _documents(package)[0]
    _, tasks = _run_group(spec)
    retried = {name: task["retryPolicy"] for name, task in tasks.items() if "retryPolicy" in task}
    beam_and_trainer = {node_ids.TRAINER, node_ids.STATISTICS_GEN, node_ids.TRANSFORM,
                        node_ids.EVALUATOR, node_ids.EXAMPLE_GEN, layout.INGEST_TASK}
    assert {name.lower() for name in beam_and_trainer} <= set(retried)
    trainer = retried[node_ids.TRAINER.lower()]
    assert trainer["maxRetryCount"] == kubeflow.TASK_RETRIES
    assert trainer["backoffDuration"] == kubeflow.RETRY_BACKOFF and trainer["backoffFactor"] == 2.0
    assert trainer["backoffMaxDuration"] == kubeflow.RETRY_BACKOFF_MAX


def test_trainer_gets_its_resources_and_other_tasks_small_defaults(package):
    spec = _documents(package)[0]
    executors = spec["deploymentSpec"]["executors"]
    trainer = executors[f"exec-{node_ids.TRAINER.lower()}"]["container"]["resources"]
    assert trainer["cpuLimit"] == 4.0 and trainer["memoryLimit"] == 16.0
    assert (trainer["accelerator"]["resourceType"], trainer["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "2")
    evaluator = executors[f"exec-{node_ids.EVALUATOR.lower()}"]["container"]["resources"]
    assert "accelerator" not in evaluator and "cpuLimit" not in evaluator
    assert evaluator["cpuRequest"] == float(kubeflow.DEFAULT_TASK_CPU)
    # The Trainer's task is told what it was given, so it can refuse to train on its CPU (trainer.devices).
    env = {e["name"]: e["value"] for e in executors[f"exec-{node_ids.TRAINER.lower()}"]["container"]["env"]}
    assert env[accelerators.ACCELERATOR_ENV] == "nvidia.com/gpu" and env[accelerators.ACCELERATOR_COUNT_ENV] == "2"
    assert "env" not in executors[f"exec-{node_ids.EVALUATOR.lower()}"]["container"]


def _node_custom_config(task) -> dict:
    """The custom_config a node task's program gives its component."""
    ir = json.loads(task["inputs"]["parameters"]["node_program"]["runtimeValue"]["constant"])
    (node,) = ir["nodes"]
    parameters = node["pipelineNode"]["parameters"]["parameters"]
    return json.loads(parameters["custom_config"]["fieldValue"]["stringValue"])


def test_with_tune_a_tuner_task_feeds_the_trainer_with_its_resources_and_retries(package, tuned_package):
    spec = _documents(tuned_package)[0]
    _, tasks = _run_group(spec)
    tuner, trainer = node_ids.TUNER.lower(), node_ids.TRAINER.lower()
    assert tuner in set(tasks) and node_ids.HYPERPARAMETERS_RESOLVER.lower() not in set(tasks)
    assert tuner in tasks[trainer]["dependentTasks"], "the Trainer waits for the search"
    assert node_ids.TRANSFORM.lower() in tasks[tuner]["dependentTasks"], "trials read the Transform graph"
    searched = _node_custom_config(tasks[tuner])
    assert searched["tuning"]["trials"] == 3 and searched["fixed_settings"] == ["dropout"]
    assert searched["training"] == _node_custom_config(tasks[trainer])["training"], "trials start where it would"
    # the same retries and cache rule as the Trainer: a preempted GPU node retries the search; TFX's cache decides
    assert tasks[tuner]["retryPolicy"] == tasks[trainer]["retryPolicy"]
    assert not tasks[tuner].get("cachingOptions", {}).get("enableCache")
    # the Trainer's CPUs, memory and GPUs, and the variables that make a trial refuse to train on the CPU
    executors = spec["deploymentSpec"]["executors"]
    assert executors[f"exec-{tuner}"]["container"]["resources"] == \
        executors[f"exec-{trainer}"]["container"]["resources"]
    env = {e["name"]: e["value"] for e in executors[f"exec-{tuner}"]["container"]["env"]}
    assert env[accelerators.ACCELERATOR_ENV] == "nvidia.com/gpu" and env[accelerators.ACCELERATOR_COUNT_ENV] == "2"
    # without --tune: no Tuner; the Trainer's task first resolves the newest recorded search's result
    _, plain = _run_group(_documents(package)[0])
    assert tuner not in plain and node_ids.HYPERPARAMETERS_RESOLVER.lower() not in plain
    assert _resolver_ids(plain[trainer]) == [node_ids.HYPERPARAMETERS_RESOLVER]
    assert _resolver_ids(tasks[trainer]) == [], "with --tune the Tuner's result is the Trainer's input"


def test_package_points_at_the_root_and_the_clusters_metadata_service(package):
    text = open(package).read()
    assert str(ROOT) not in text, "the package must not point into this checkout"
    assert "sqlite" not in text.lower()
    assert "gs://bucket/cats/serving_model" in text and "gs://bucket/cats/schema/schema.pbtxt" in text
    assert kubeflow.DEFAULT_METADATA_STORE in text
    spec = _documents(package)[0]
    assert spec["defaultPipelineRoot"] == "gs://bucket/cats/kfp"
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["source"]["defaultValue"] == "gs://bucket/images"
    assert parameters["source_kind"]["defaultValue"] == "folder"
    assert pipeline_lib.RUN_FN in text and pipeline_lib.PREPROCESSING_FN in text


def test_pvc_is_mounted_into_every_task(pvc_package):
    spec, platform = _documents(pvc_package)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for name, executor in executors.items():
        assert [(m["constant"], m["mountPath"]) for m in executor["pvcMount"]] == [("cats-data", "/mnt/pipeline")], name
        # The run id's fallback where a backend leaves the placeholder unsubstituted.
        assert executor["fieldPathAsEnv"] == [{"fieldPath": "metadata.labels['pipeline/runid']", "name": "KFP_RUN_ID"}]


def test_every_source_kind_has_a_local_flag_and_is_a_package_choice():
    import pipeline_runner
    from cli import local_run
    from ingest import sources

    assert set(local_run.SOURCE_FLAGS) == set(sources.LISTERS)
    compile_ = next(a for a in pipeline_runner.build_parser()._actions if a.dest == "command").choices["compile"]
    kinds = next(a for a in compile_._actions if a.dest == "source_kind").choices
    assert set(kinds) == set(sources.LISTERS)


@pytest.mark.parametrize("settings, message", [
    ({"root": "relative/root"}, "absolute path"),
    ({"root": "gs://b/c", "source_kind": "csv"}, "--source-kind 'csv'"),
    ({"root": "/data/cats", "pvc": "claim"}, "under the PVC's mount path"),
    ({"root": "/mnt/pipeline/cats", "pvc": "claim", "data_dir": "/home/me/pets"}, "not on the PVC"),
    ({"root": "gs://b/c", "metadata_store": "mysql://db"}, "grpc://HOST:PORT"),
    ({"root": "gs://b/c", "lease_timeout_minutes": 2}, "at least 3: tasks renew the lease every 60 s"),
    # a value float() of its seconds could not hold was a traceback at compile time
    ({"root": "gs://b/c", "lease_timeout_minutes": 10 ** 400}, "at most 43,200 .30 days."),
    ({"root": "gs://b/c", "lease_timeout_minutes": 43_201}, "at most 43,200"),
])
def test_settings_that_cannot_work_are_refused_at_compile_time(settings, message):
    with pytest.raises(kubeflow.TargetError, match=message):
        kubeflow.Deployment(image=IMAGE, **settings)


def test_vertex_package_is_tfx_native_with_its_resolver_queries(tmp_path):
    path = vertex.compile_vertex_package(PipelineConfig(), str(tmp_path / "vertex.yaml"), image=IMAGE,
                                           root="gs://bucket/cats", beam_args=[])
    spec = yaml.safe_load(open(path))
    assert spec["schemaVersion"] == "2.1.0"
    parsed = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(spec, parsed, ignore_unknown_fields=False)
    resolvers = [e for e in spec["deploymentSpec"]["executors"].values() if "resolver" in e]
    assert resolvers and all(e["resolver"]["outputArtifactQueries"] for e in resolvers)
    tuned = yaml.safe_load(open(vertex.compile_vertex_package(
        with_overrides(PipelineConfig(), {"warm_start": True}), str(tmp_path / "tuned.yaml"), image=IMAGE,
        root="gs://bucket/cats/", beam_args=[], tuning=TuningConfig(trials=2))))
    assert node_ids.TUNER in tuned["root"]["dag"]["tasks"] and node_ids.TUNER not in spec["root"]["dag"]["tasks"]
    hyperparameters = tuned["root"]["dag"]["tasks"][node_ids.TRAINER]["inputs"]["artifacts"]["hyperparameters"]
    assert hyperparameters["taskOutputArtifact"]["producerTask"] == node_ids.TUNER
    _assert_resolvers_read_only_the_roots_artifacts(spec, {"HyperparametersResolver", "BaselineResolver"})
    _assert_resolvers_read_only_the_roots_artifacts(tuned, {"BaselineResolver", "WarmStartResolver"})


def _assert_resolvers_read_only_the_roots_artifacts(spec, resolvers):
    """Vertex ML Metadata is the project's and region's, and a query without in_context(...) sees every pipeline
    of this name: each query TFX compiled asks for the artifacts the root's own Tuner or Evaluator stamped, or
    for the one Model such a blessing names."""
    executors = spec["deploymentSpec"]["executors"]
    queries = {label.split("_executor")[0]: query["filter"] for label, executor in executors.items()
               for query in executor.get("resolver", {}).get("outputArtifactQueries", {}).values()}
    assert {label.split("-model")[0] for label in queries} == resolvers
    scope = 'metadata.root.string_value="gs://bucket/cats"'
    for label, query in queries.items():
        if '"tfx.Model"' in query:
            assert "AND name=\"{{$.inputs.artifacts['input'].metadata['current_model_id']}}\"" in query, query
        else:
            assert query.endswith(f" AND {scope}") and query.startswith(
                ('schema_title="tfx.HyperParameters"', 'schema_title="tfx.ModelBlessing"')), query
    stamping = {label: container.get("env") for label, executor in executors.items()
                if (container := executor.get("container")) and container.get("env")}
    writers = {f"{node_ids.EVALUATOR}_executor"} | ({f"{node_ids.TUNER}_executor"}
                                                      if node_ids.TUNER in spec["root"]["dag"]["tasks"] else set())
    assert stamping == {label: [{"name": "STAMP_ROOT", "value": "gs://bucket/cats"}] for label in writers}


def test_a_vertex_package_that_cannot_be_scoped_or_compiled_is_refused_before_any_work(tmp_path):
    with pytest.raises(kubeflow.TargetError, match="span-window"):
        vertex.compile_vertex_package(with_overrides(PipelineConfig(), {"span_window": 3}),
                                        str(tmp_path / "v2.yaml"), image=IMAGE, root="gs://b/c", beam_args=[])
    for root in ('gs://b/"c', "gs://b/c*", "gs://b/c\\d"):
        with pytest.raises(kubeflow.TargetError, match="cannot use a root with a quote, a backslash or a \\*"):
            vertex.compile_vertex_package(PipelineConfig(), str(tmp_path / "v3.yaml"), image=IMAGE, root=root,
                                          beam_args=[])
    assert not list(tmp_path.iterdir())


def test_package_name_must_be_yaml(tmp_path):
    with pytest.raises(kubeflow.TargetError, match=".yaml"):
        kubeflow.compile_package(PipelineConfig(), str(tmp_path / "p.json"),
                                 kubeflow.Deployment(image=IMAGE, root="gs://b"))


class _FakeKfpApi(BaseHTTPRequestHandler):
    """The KFP v2beta1 REST API, as much of it as submit and schedule use; records what it receives."""

    received: list = []

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.received.append(("GET", self.path, None))
        self._reply({"experiments": [{"experiment_id": "exp-1", "display_name": "cats-vs-dogs"}], "total_size": 1}
                    if "/experiments" in self.path else {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.received.append(("POST", self.path, body))
        if self.path.endswith("/recurringruns"):
            self._reply({"recurring_run_id": "job-1"})
        elif self.path.endswith("/runs"):
            self._reply({"run_id": "run-1"})
        else:
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})

    def log_message(self, *args):
        pass


@pytest.fixture()
def kfp_api():
    _FakeKfpApi.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _FakeKfpApi.received
    server.shutdown()


def _cli(*arguments, env=None):
    """A process of its own: for an environment of its own (google-auth reads it), or kfp.local's run (its state is
    global to the process)."""
    return subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *arguments], capture_output=True,
                          text=True, timeout=180, cwd=ROOT, env=env)


def test_submit_hands_the_pipeline_root_and_parameters_to_kfp_with_its_cache_off(package, kfp_api):
    host, received = kfp_api
    result = cli_in_process("submit", "--package", package, "--host", host, "--data-dir", "gs://bucket/pets.parquet",
                  "--source-kind", "parquet")
    assert result.returncode == 0, result.stderr
    assert "started run run-1" in result.stdout
    (body,) = [b for method, path, b in received if method == "POST" and path.endswith("/runs")]
    assert body["runtime_config"] == {"parameters": {"source": "gs://bucket/pets.parquet", "source_kind": "parquet"},
                                      "pipeline_root": "gs://bucket/cats/kfp"}
    assert body["experiment_id"] == "exp-1"
    sent = body["pipeline_spec"]
    sent = sent.get("pipeline_spec", sent)  # with a platform spec (the PVC, the run id env) both travel together
    tasks = sent["root"]["dag"]["tasks"]
    assert set(tasks) == set(_documents(package)[0]["root"]["dag"]["tasks"])
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())


def test_schedule_creates_a_recurring_run_one_at_a_time(package, kfp_api):
    host, received = kfp_api
    result = cli_in_process("schedule", "--package", package, "--host", host, "--cron", "0 0 3 * * *",
                  "--pipeline-root", "gs://other/kfp")
    assert result.returncode == 0, result.stderr
    (body,) = [b for method, path, b in received if method == "POST" and path.endswith("/recurringruns")]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["max_concurrency"] == 1 and body["mode"] == "ENABLE"
    assert body["runtime_config"]["pipeline_root"] == "gs://other/kfp"


@pytest.mark.parametrize("command", [
    ["submit", "--host"],
    ["schedule", "--cron", "0 0 3 * * *", "--host"],
])
def test_unreachable_endpoint_is_a_clear_error(package, command):
    host = "http://127.0.0.1:9"  # discard port: nothing listens
    result = cli_in_process(*command, host, "--package", package)
    assert result.returncode == 2
    assert f"cannot reach Kubeflow Pipelines at {host}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_vertex_project_is_a_clear_error(tmp_path):
    package = vertex.compile_vertex_package(PipelineConfig(), str(tmp_path / "vertex.yaml"), image=IMAGE,
                                              root="gs://bucket/cats", beam_args=[])
    # No credentials here; keep google-auth's metadata-server probe on loopback.
    env = dict(os.environ, NO_GCE_CHECK="True", GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
               GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "none.json"))
    result = _cli("submit", "--package", package, "--vertex-project", "my-project", "--region", "europe-west4",
                  env=env)
    assert result.returncode == 2, result.stderr
    assert "cannot reach Vertex AI Pipelines for project my-project in europe-west4" in result.stderr
    assert "Traceback" not in result.stderr


def test_compile_refuses_kubeflow_only_flags_for_vertex(tmp_path):
    result = cli_in_process("compile", "--target", "vertex", "--image", IMAGE, "--root", "gs://b/c", "--pvc", "claim",
                  "--package", str(tmp_path / "v.yaml"))
    assert result.returncode == 2 and "--pvc applies only to --target kubeflow" in result.stderr


def test_flags_of_another_target_are_refused_in_a_sentence_that_agrees_with_them(tmp_path, capsys):
    import pipeline_runner

    code = pipeline_runner.main(["compile", "--target", "vertex", "--image", IMAGE, "--root", "gs://b/c", "--pvc",
                                 "claim", "--pvc-mount", "/mnt/p", "--package", str(tmp_path / "v.yaml")])
    assert code == 2 and "--pvc, --pvc-mount apply only to --target kubeflow" in capsys.readouterr().err


def test_compile_tune_names_the_tuner_task_in_the_same_line_for_every_target(tmp_path, capsys):
    import pipeline_runner

    assert pipeline_runner.main(["compile", "--target", "vertex", "--image", IMAGE, "--root", "gs://b/c", "--tune",
                                 "--tune-trials", "3", "--package", str(tmp_path / "v.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == kubeflow.tuner_line(TuningConfig(trials=3)) == (
        "its Tuner task searches up to 3 trials before the Trainer in every run; a package compiled without --tune "
        "reuses the newest search's result instead")


def test_compile_refuses_a_search_that_cannot_run_before_any_work(tmp_path):
    package = tmp_path / "p.yaml"
    result = cli_in_process("compile", "--image", IMAGE, "--root", "gs://b/c", "--tune", "--tune-trials", "0",
                  "--package", str(package))
    assert result.returncode == 2 and result.stderr == "error: invalid tune_trials: must be an integer in [1, 1000], " \
        "got 0\n", result.stderr
    assert not package.exists()


def test_kfp_cron_needs_six_fields():
    with pytest.raises(ValueError, match="6 fields"):
        kfp_runs.check_kfp_cron("0 3 * * *")
    kfp_runs.check_kfp_cron("0 0 3 * * *")


@pytest.mark.e2e
def test_local_run_against_an_unreachable_store_fails_naming_it_and_pushes_nothing(tmp_path, demo_jpegs):
    images, root = tmp_path / "images", tmp_path / "root"
    for name, jpegs in demo_jpegs.items():
        (images / name).mkdir(parents=True)
        for i, jpeg in enumerate(jpegs):
            (images / name / f"{i}.jpg").write_bytes(jpeg)
    package = str(tmp_path / "p.yaml")
    compiled = cli_in_process("compile", "--image", IMAGE, "--root", str(root), "--data-dir", str(images),
                    "--metadata-grpc", "127.0.0.1:9", "--package", package)
    assert compiled.returncode == 0, compiled.stderr
    result = _cli("submit", "--local", "--package", package, "--kfp-outputs", str(tmp_path / "kfp"))
    assert result.returncode == 1
    output = result.stdout + result.stderr
    # the first task asks the store (to mark outputs whose files are gone) before it ingests anything
    assert "error: cannot reach the ML Metadata store grpc://127.0.0.1:9" in output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: run local-")]
    assert "failed at ingest: cannot reach the ML Metadata store grpc://127.0.0.1:9" in line
    assert not (root / "serving_model").exists() and not (root / "examples").exists()
    # the exit handler ran after the failure, as on a cluster: the run's summary names the task and the reason
    (summary_path,) = (root / "runs").glob("*/run_summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["failed"] and summary["error"].startswith(
        "failed at ingest: cannot reach the ML Metadata store grpc://127.0.0.1:9")
    assert not (root / ".pipeline.lock").exists(), "the exit handler releases the root"


def test_local_run_refuses_a_package_for_the_clusters_store(package):
    result = cli_in_process("submit", "--local", "--package", package)
    assert result.returncode == 2 and "a local run needs a package compiled with a local --root" in result.stderr


@pytest.mark.parametrize("text, expected", [
    ("just: [text\n", "it does not parse as YAML (while parsing a flow sequence)"),
    ("hello\n", "no pipelineInfo or pipelineSpec in it"),
    ("- a\n- b\n", "no pipelineInfo or pipelineSpec in it"),
    ("", "no pipelineInfo or pipelineSpec in it"),
])
@pytest.mark.parametrize("command", [["submit", "--local"], ["schedule", "--host", "http://127.0.0.1:9"]])
def test_a_file_that_is_not_a_package_is_named_in_one_line(tmp_path, capsys, text, expected, command):
    import pipeline_runner

    package = tmp_path / "pipeline.yaml"
    package.write_text(text)
    code = pipeline_runner.main([*command, "--package", str(package)] +
                                (["--cron", "0 0 3 * * *"] if command[0] == "schedule" else []))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"error: {package} is not a pipeline package: {expected}" in err


def test_the_tasks_take_the_arguments_a_package_compiled_before_they_had_a_say_passes():
    """A package embeds its component bodies: one compiled before the tasks took `say` calls them without it, on
    an image built after (a recurring run whose image tag was pushed again)."""
    import inspect

    from orchestration.engines import kfp_tasks

    for name in ("ingest", "run_node", "rollout", "report", "monitor"):
        assert inspect.signature(getattr(kfp_tasks, name)).parameters["say"].default is not inspect.Parameter.empty, \
            name
