"""The compiled Kubeflow package, run end to end with the kfp SDK's own local runner.

`compile` writes the package (a local root, as a rehearsal package, and ML
Metadata the way a cluster has it: a gRPC service over a MySQL-protocol
database, here Debian's MariaDB with the tests' stand-in for the service,
tests/metadata_service.py); `submit --local` loads that YAML with
kfp.components.load_component_from_file and runs every task as a subprocess
with kfp.local's SubprocessRunner. The runs a deployment sees:
1. two runs of the package started at once on one root, no lock around them
                               -> one takes the root's lease: every TFX node executed once, version 1 pushed;
                                  the other is refused by its first task and its exit handler says so
2. the same data               -> every TFX component CACHED in MLMD; nothing pushed
3. new images in the folder, with a package compiled with --tune (1 trial: the wiring; the retraining scenario
   checks the choice among trials)
                               -> a new span; the Tuner task searches and the Trainer takes its best
                                  hyperparameters; evaluated against version 1's model
4. `models` and `rollback` on the deployment's root and store -> version 1's model served again as version 3
   a run whose Trainer task is killed with SIGKILL mid-training and launched again in the same run
   (a package compiled without --tune)
                               -> one COMPLETE Trainer execution, one model, nothing of the killed attempt left;
                                  its Trainer took the hyperparameters run 3's search recorded
5. every image filed as a cat  -> the data gate stops the run; the exit handler's summary names it
MLMD is read here directly.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from contract import metadata as node_ids
from contract import served
from ingest import span_report, synthetic
from orchestration.root import lease
from tests.helpers import (
    DEFAULT_NODE_IDS,
    PIPELINE_NAME,
    ROOT,
    TINY,
    cli_in_process,
    evaluator_models,
    latest_run_states,
    tree_digest,
)
from tests.metadata_service import GrpcFront, MariaDB

pytestmark = pytest.mark.e2e
COMPONENTS = set(DEFAULT_NODE_IDS) - node_ids.RESOLVER_IDS


def _cli(*arguments):
    return subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *arguments], capture_output=True,
                          text=True, timeout=1200, cwd=ROOT)


@pytest.fixture(scope="module")
def metadata_service(tmp_path_factory):
    """MariaDB and the gRPC ML Metadata service over it, for the module's runs; the client config to read it."""
    if not MariaDB.available():
        pytest.fail("MariaDB is not installed: `make test` installs Debian's mariadb-server (apt, as root)")
    database = MariaDB(tmp_path_factory.mktemp("mariadb")).start()
    front = GrpcFront(database.connection_config()).start()
    yield front.address, metadata_store_pb2.MetadataStoreClientConfig(host="127.0.0.1", port=front.port)
    front.stop()
    database.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, metadata_service):
    base = tmp_path_factory.mktemp("kfp-local")
    images, root, package = base / "images", base / "root", base / "pipeline.yaml"
    address, metadata = metadata_service
    synthetic.write_demo_images(images, 16)
    record = {"root": root, "package": package, "images": images, "store": f"grpc://{address}"}
    compile_args = ["compile", "--image", "cats-vs-dogs:test", "--root", str(root), "--data-dir", str(images),
                    "--metadata-grpc", address, "--beam-arg=--direct_running_mode=in_memory",
                    *TINY, "--no-tflite",  # TFLite export is checked by the LocalDagRunner e2e tests
                    "--min-accuracy", "0", "--max-accuracy-drop", "1"]
    # Both packages compiled in this process (a process of their own would import TensorFlow and TFX again); the
    # tuned one is the third run's.
    record["compile"] = cli_in_process(*compile_args, "--package", str(package))
    submit = ["submit", "--local", "--package", str(package), "--kfp-outputs", str(base / "kfp")]
    tuned_package = base / "tuned.yaml"
    record["tuned_compile"] = cli_in_process(*compile_args, "--tune", "--tune-trials", "1", "--package",
                                             str(tuned_package))

    logs = {name: (open(base / f"{name}.out", "w+"), open(base / f"{name}.err", "w+")) for name in ("kfp-a", "kfp-b")}
    racers = {name: subprocess.Popen([sys.executable, str(ROOT / "pipeline_runner.py"), *submit[:-1], str(base / name)],
                                     stdout=out, stderr=err, text=True, cwd=ROOT)
              for name, (out, err) in logs.items()}
    finished = []
    for name, racer in racers.items():
        code = racer.wait(timeout=1200)
        finished.append(subprocess.CompletedProcess(racer.args, code, *(open(f.name).read() for f in logs[name])))
    record["racers"] = sorted(finished, key=lambda r: r.returncode)
    record["first"] = record["racers"][0]
    record["first_states"], _, _ = latest_run_states(metadata)
    record["spans_after_first"] = sorted(os.listdir(root / "examples"))
    record["served_after_first"] = tree_digest(root / "serving_model")
    record["versions_after_first"] = sorted(os.listdir(root / "serving_model"))

    record["second"] = _cli(*submit)
    record["second_states"], _, _ = latest_run_states(metadata)
    record["versions_after_second"] = sorted(os.listdir(root / "serving_model"))
    record["served_after_second"] = tree_digest(root / "serving_model")

    more = base / "more-images"
    shutil.copytree(images, more)
    synthetic.write_demo_images(more / "new", 6, seed=1)
    record["third"] = _cli(*submit[:3], str(tuned_package), *submit[4:], "--data-dir", str(more))
    record["third_states"], store, run = latest_run_states(metadata)
    record["third_evaluator_models"] = evaluator_models(store, run)
    record["third_hyperparameters"] = {node: _hyperparameters(store, run.name, node, event)
                                       for node, event in ((node_ids.TUNER, metadata_store_pb2.Event.OUTPUT),
                                                           (node_ids.TRAINER, metadata_store_pb2.Event.INPUT))}
    record["versions_after_third"] = sorted(os.listdir(root / "serving_model"))
    record["config_after_third"] = served.read_config(str(root / "serving_model"))

    # history and rollback on the deployment's root and store, as from a laptop with the store port-forwarded
    on_root = ["--root", str(root), "--metadata-grpc", address]
    held = lease.acquire(root, "a-run-in-progress")
    record["rollback_while_held"] = cli_in_process("rollback", *on_root, "--to", "1")
    lease.release(root, held.run_id)
    record["rollback"] = cli_in_process("rollback", *on_root, "--to", "1", "--reason",
                                        "version 2 misreads night photos")
    record["models"] = cli_in_process("models", *on_root, "--json")
    record["models_without_store"] = cli_in_process("models", "--root", str(root))

    record["relaunch"] = _kill_trainer_then_launch_it_again(base, root, metadata, compile_args)

    all_cats = base / "all-cats"
    (all_cats / "cat").mkdir(parents=True)
    for path in sorted(images.rglob("*.jpg")):
        shutil.copy(path, all_cats / "cat" / path.name)
    record["gate"] = _cli(*submit, "--data-dir", str(all_cats))
    record["gate_states"], _, _ = latest_run_states(metadata)
    record["versions_after_gate"] = sorted(os.listdir(root / "serving_model"))
    return record


_TASKS = """
import json, sys
from orchestration.engines import kfp_tasks
for node_program, resolver_programs in json.load(open(sys.argv[1])):
    kfp_tasks.run_node(node_program, sys.argv[2], sys.argv[3], sys.argv[4], say=print,
                       resolver_programs=resolver_programs)
"""


def _tasks_up_to(package, last):
    """(node program, its resolvers' programs) of the package's node tasks that `last`'s task waits for, in
    dependency order, `last`'s included."""
    with open(package) as f:
        spec = next(yaml.safe_load_all(f))
    (group,) = [t for name, t in spec["root"]["dag"]["tasks"].items() if name != "report"]
    programs, upstream = {}, {}
    for name, task in spec["components"][group["componentRef"]["name"]]["dag"]["tasks"].items():
        parameters = task["inputs"]["parameters"]
        if "node_program" in parameters:
            programs[name] = [parameters[key]["runtimeValue"]["constant"]
                              for key in ("node_program", "resolver_programs")]
            upstream[name] = set(task.get("dependentTasks", [])) - {"ingest"}
    needed, order = {last.lower()}, []
    while needed - set(order):
        for task in sorted(needed - set(order)):
            needed |= upstream[task]
            if upstream[task] <= set(order):
                order.append(task)
    return [programs[task] for task in order]


def _hyperparameters(store, run_id, node_id, event_type):
    """{uri: the best_hyperparameters file's content} of the HyperParameters artifacts `node_id` read (INPUT) or
    wrote (OUTPUT) in run `run_id`."""
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    node = store.get_context_by_type_and_name("node", f"{PIPELINE_NAME}.{node_id}")
    executions = {e.id for e in store.get_executions_by_context(node.id)} & \
        {e.id for e in store.get_executions_by_context(run.id)}
    events = [e for e in store.get_events_by_execution_ids(list(executions)) if e.type == event_type]
    kind = store.get_artifact_type("HyperParameters").id
    return {a.uri: json.loads(open(os.path.join(a.uri, "best_hyperparameters.txt")).read())
            for a in store.get_artifacts_by_id([e.artifact_id for e in events]) if a.type_id == kind}


def _trainer_execution(metadata, run_id, node_id=node_ids.TRAINER):
    """(id, state) of the Trainer's (`node_id`'s) executions in run `run_id`."""
    store = metadata_store.MetadataStore(metadata)
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    node = store.get_context_by_type_and_name("node", f"{PIPELINE_NAME}.{node_id}")
    if run is None or node is None:
        return []
    in_node = {e.id for e in store.get_executions_by_context(node.id)}
    return [(e.id, metadata_store_pb2.Execution.State.Name(e.last_known_state))
            for e in store.get_executions_by_context(run.id) if e.id in in_node]


def _kill_trainer_then_launch_it_again(base, root, metadata, compile_args):
    """A run whose Trainer task is killed with SIGKILL mid-training, then launched again in the same run (what
    KFP's retry does): the nodes before it run as tasks would, in one process; the Trainer in its own."""
    package = base / "longer-training.yaml"
    cli_in_process(*compile_args, "--head-epochs", "3", "--fine-tune-epochs", "3", "--package", str(package))
    tasks = _tasks_up_to(package, node_ids.TRAINER)
    run_id, store = "relaunch-run", f"grpc://{metadata.host}:{metadata.port}"
    held = lease.acquire(root, run_id)  # what the run's ingest task does first
    (base / "upstream.json").write_text(json.dumps(tasks[:-1]))
    (base / "trainer.json").write_text(json.dumps(tasks[-1:]))
    before = subprocess.run([sys.executable, "-c", _TASKS, str(base / "upstream.json"), run_id, store, str(root)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert before.returncode == 0, before.stderr[-3000:]
    command = [sys.executable, "-c", _TASKS, str(base / "trainer.json"), run_id, store, str(root)]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    trainer_dir = root / "pipeline_root" / node_ids.TRAINER
    deadline = time.time() + 600
    while time.time() < deadline:
        executions = _trainer_execution(metadata, run_id)
        if executions and list((trainer_dir / "model_run" / str(executions[0][0])).rglob("*tfevents*")):
            break  # training has started: TensorBoard has written its first events
        assert first.poll() is None, "the Trainer ended before it could be killed"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    record = {"killed_states": _trainer_execution(metadata, run_id)}
    execution_id = record["killed_states"][0][0]
    record["left_by_killed"] = [path for folder in trainer_dir.glob(f"*/{execution_id}")
                                for path in folder.rglob("*") if path.is_file()]
    record["relaunched_at"] = time.time()
    record["relaunch"] = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    record["states"] = _trainer_execution(metadata, run_id)
    record["resolver_states"] = _trainer_execution(metadata, run_id, node_ids.HYPERPARAMETERS_RESOLVER)
    store_handle = metadata_store.MetadataStore(metadata)
    events = store_handle.get_events_by_execution_ids([execution_id])
    outputs = store_handle.get_artifacts_by_id([e.artifact_id for e in events
                                                if e.type == metadata_store_pb2.Event.OUTPUT])
    types = {t.id: t.name for t in store_handle.get_artifact_types()}
    record["outputs"] = sorted((types[a.type_id], a.uri) for a in outputs)
    record["hyperparameters_read"] = _hyperparameters(store_handle, run_id, node_ids.TRAINER,
                                                      metadata_store_pb2.Event.INPUT)
    lease.release(root, held.run_id)
    return record


def _summary(result):
    """The run summary the exit handler wrote for the run `submit --local` printed."""
    (line,) = [line for line in (result.stdout + result.stderr).splitlines() if "summary and report" in line]
    folder = line.rsplit(" in ", 1)[-1]
    return json.load(open(os.path.join(folder, "run_summary.json"))), folder


def test_compile_writes_the_rehearsal_package(runs):
    result = runs["compile"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote Kubeflow Pipelines package {runs['package']}" in result.stdout
    # a root on this machine: nothing a cluster could serve from, so no InferenceService beside the package
    assert "no KServe manifest" in result.stdout and not list(runs["package"].parent.glob("*.inferenceservice.yaml"))
    with open(runs["package"]) as f:
        spec = next(yaml.safe_load_all(f))
    assert spec["root"]["inputDefinitions"]["parameters"]["source"]["defaultValue"] == str(runs["images"])
    report = spec["root"]["dag"]["tasks"]["report"]["inputs"]["parameters"]
    assert report["metadata_store"]["runtimeValue"]["constant"] == runs["store"]


def test_first_run_executes_every_node_once_and_pushes_version_1(runs):
    result = runs["first"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    states = runs["first_states"]
    assert set(states) == set(DEFAULT_NODE_IDS)
    assert all(s == ["COMPLETE"] for s in states.values()), states
    assert runs["versions_after_first"] == ["1", served.CONFIG_FILE]
    assert runs["spans_after_first"] == ["span-1", span_report.NUMBERS_FILE]
    summary, folder = _summary(result)
    assert summary["pushed_version"] == 1 and summary["blessed"] is True and summary["error"] is None
    assert os.path.exists(os.path.join(folder, "report", "index.html"))
    assert not (runs["root"] / ".pipeline.lock").exists(), "the exit handler released the root"
    # one line per task on the terminal; kfp.local's and the tasks' thousands of lines in the run's log
    first, *tasks, last = result.stdout.splitlines()
    assert first.startswith(f"run {summary['run_id']}: each task's output in ")
    assert last == f"local run finished: blessed, pushed as version 1; summary and report in {folder}"
    # a task per TFX node but the resolvers (each runs in its reader's task), the ingest task and the exit handler
    names = {line.split(":")[0].strip() for line in tasks}
    assert names == {node.lower() for node in COMPONENTS} | {"ingest", "report"} and len(tasks) == len(names), tasks
    assert all(line.startswith("  ") and ": success (" in line for line in tasks), tasks
    log = open(first.rsplit(" in ", 1)[-1]).read()
    assert log.count("Executing task") == len(tasks) and "Traceback" not in result.stdout + result.stderr
    # Every task starts from the warm process (orchestration.engines.warm_tasks), the first ones once it has imported
    # the libraries; none declined (an environment that differs, another working directory).
    (warm,) = re.findall(r"kfp.local tasks: (\d+) started from the warm process(.*)", log)
    assert int(warm[0]) == len(tasks) and warm[1] == "", warm


def test_a_run_started_while_another_holds_the_root_is_refused_and_reports_it(runs):
    winner, loser = runs["racers"]
    assert loser.returncode == 1, loser.stdout[-3000:] + loser.stderr[-3000:]
    assert "error: another run of this pipeline is in progress (run local-" in loser.stdout  # the task's log
    assert "error: run local-" in loser.stderr and \
        "refused: another run of this pipeline is in progress (run local-" in loser.stderr
    summary, _ = _summary(loser)
    assert summary["error"].startswith("refused: another run of this pipeline is in progress")
    assert summary["nodes"] == [] and summary["pushed_version"] is None
    assert summary["run_id"] not in winner.stdout


def test_unchanged_rerun_is_cached_in_mlmd_and_pushes_nothing(runs):
    assert runs["second"].returncode == 0, runs["second"].stderr[-3000:]
    states = runs["second_states"]
    assert {node: states[node] for node in COMPONENTS} == {node: ["CACHED"] for node in COMPONENTS}
    assert runs["versions_after_second"] == ["1", served.CONFIG_FILE]
    assert runs["served_after_second"] == runs["served_after_first"]


def test_new_images_make_a_new_span_evaluated_against_version_1(runs):
    assert runs["third"].returncode == 0, runs["third"].stderr[-3000:]
    assert (runs["root"] / "examples" / "span-2").is_dir()
    states = runs["third_states"]
    assert states[node_ids.TRAINER] == ["COMPLETE"] and states[node_ids.EVALUATOR] == ["COMPLETE"]
    served_uri = json.load(open(runs["root"] / "serving_model" / "1" / "assets.extra" / "push.json"))["model_uri"]
    assert served_uri in runs["third_evaluator_models"], "the baseline must be the model served as version 1"
    assert len(runs["third_evaluator_models"]) == 2
    assert runs["versions_after_third"] == ["1", "2", served.CONFIG_FILE]
    # What the InferenceService's TF Serving reads: version 2, under the path the predictor sees.
    assert runs["config_after_third"] == served.ServingConfig("cats-vs-dogs", "/mnt/models", 2)


# The search's record in the best_hyperparameters file (trainer.hyperparameters' TUNED_KEY and COMPLETED; that module
# imports TensorFlow, which this process otherwise never loads).
TUNED_KEY, COMPLETED = "tuned", "completed"


def test_a_package_compiled_with_tune_searches_in_its_tuner_task_and_trains_with_the_best(runs):
    assert runs["tuned_compile"].returncode == 0, runs["tuned_compile"].stderr[-3000:]
    assert "its Tuner task searches up to 1 trial before the Trainer" in runs["tuned_compile"].stdout
    assert runs["third_states"][node_ids.TUNER] == ["COMPLETE"]
    assert node_ids.HYPERPARAMETERS_RESOLVER not in runs["third_states"]
    (written, search), = runs["third_hyperparameters"][node_ids.TUNER].items()
    assert list(runs["third_hyperparameters"][node_ids.TRAINER]) == [written], "the Trainer took the Tuner's result"
    trials = search[TUNED_KEY]["trials"]
    assert len(trials) == 1 and trials[0]["kept"]
    assert all(t["status"] == COMPLETED for t in trials), trials
    assert search["values"] == next(t["values"] for t in trials if t["kept"])
    # the run that searched is the KFP run, as every task of it names it
    summary, _ = _summary(runs["third"])
    assert search[TUNED_KEY]["run"] == summary["run_id"]


def test_a_package_compiled_without_tune_trains_with_the_newest_search_recorded(runs):
    """The relaunch run's package has no Tuner: the resolver in the Trainer's task hands it what run 3's search
    found."""
    written = list(runs["third_hyperparameters"][node_ids.TUNER])
    assert list(runs["relaunch"]["hyperparameters_read"]) == written


def test_a_run_the_data_gate_stops_is_reported_by_the_exit_handler(runs):
    result = runs["gate"]
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    # the training split's balance: its held-out splits of a few images are as lopsided by chance as data within the
    # bound gives (components/anomalies_gate.py)
    assert "failed at AnomaliesGate: DataAnomaliesError: 1 data anomaly found" in result.stderr
    summary, folder = _summary(result)
    assert summary["failed"] and summary["error"].startswith(f"failed at {node_ids.ANOMALIES_GATE}: ")
    assert "DataAnomaliesError: 1 data anomaly found" in summary["error"], summary["error"]
    # the reason itself, each problem on its line, as a local run's summary says it
    assert "[train] class balance: label 0: " in summary["error"] and "label 1: 0" in summary["error"]
    assert runs["gate_states"][node_ids.ANOMALIES_GATE] == ["FAILED"]
    assert node_ids.TRAINER not in runs["gate_states"]
    assert runs["versions_after_gate"] == ["1", "2", "3", served.CONFIG_FILE]
    assert os.path.exists(os.path.join(folder, "report", "index.html"))
    assert not (runs["root"] / ".pipeline.lock").exists()


def test_models_and_rollback_work_on_the_deployments_root_and_store(runs):
    refused = runs["rollback_while_held"]
    assert refused.returncode == 3 and "in progress (run a-run-in-progress" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = runs["rollback"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "version 1's model is served again as version 3" in done.stdout
    assert runs["models"].returncode == 0, runs["models"].stderr[-3000:]
    versions = {v["version"]: v for v in json.loads(runs["models"].stdout)}
    assert sorted(versions) == [1, 2, 3]
    assert versions[3]["rolled_back_to"] == 1 and versions[3]["served"]
    assert versions[3]["model_uri"] == versions[1]["model_uri"]
    assert versions[3]["reason"] == "version 2 misreads night photos"
    missing = runs["models_without_store"]
    assert missing.returncode == 2 and "--root needs the deployment's ML Metadata store" in missing.stderr


def test_a_trainer_killed_mid_training_completes_once_when_launched_again_in_the_same_run(runs):
    relaunch = runs["relaunch"]
    (killed_id, killed_state), = relaunch["killed_states"]
    assert killed_state == "RUNNING", "SIGKILL leaves the execution RUNNING: no Python code ran to mark it"
    assert relaunch["left_by_killed"], "the killed attempt had written files"
    result = relaunch["relaunch"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{node_ids.TRAINER}: an earlier attempt in this run stopped while it ran (execution {killed_id}" \
        in result.stdout
    assert f"{node_ids.TRAINER}: executed" in result.stdout
    assert relaunch["states"] == [(killed_id, "COMPLETE")], "one execution of the node in the run, reused"
    # the resolver the Trainer's task runs first completed in the killed attempt: not run again
    assert f"{node_ids.HYPERPARAMETERS_RESOLVER}: done earlier" in result.stdout
    assert [state for _, state in relaunch["resolver_states"]] == ["COMPLETE"]
    models = [uri for kind, uri in relaunch["outputs"] if kind == "Model"]
    assert len(models) == 1 and os.path.exists(os.path.join(models[0], "Format-Serving", "saved_model.pb"))
    stale = [str(path) for path in relaunch["left_by_killed"]
             if path.exists() and path.stat().st_mtime < relaunch["relaunched_at"]]
    assert stale == [], "files of the killed attempt are gone or written anew"
