"""The compiled Kubeflow package, run end to end with the kfp SDK's own local runner.

`compile` writes the package (with a SQLite ML Metadata file and a local root,
as a rehearsal package); `submit --local` loads that YAML with
kfp.components.load_component_from_file and runs every task as a subprocess
with kfp.local's SubprocessRunner. The runs a deployment sees:
1. two runs of the package started at once on one root, no lock around them
                               -> one takes the root's lease: every TFX node executed once, version 1 pushed;
                                  the other is refused by its first task and its exit handler says so
2. the same data               -> every TFX component CACHED in MLMD; nothing pushed
3. new images in the folder    -> a new span, evaluated against version 1's model
4. `models` and `rollback` on the deployment's root and store -> version 1's model served again as version 3
5. every image filed as a cat  -> the data gate stops the run; the exit handler's summary names it
MLMD is read here directly.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ingest import synthetic
from orchestration import lease
from pipeline import pipeline as pipeline_lib
from tests.helpers import ROOT, TINY, evaluator_models, latest_run_states, tree_digest

pytestmark = pytest.mark.e2e
COMPONENTS = set(pipeline_lib.NODE_IDS) - pipeline_lib.RESOLVER_IDS


def _cli(*arguments):
    return subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *arguments], capture_output=True,
                          text=True, timeout=1200, cwd=ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("kfp-local")
    images, root, package = base / "images", base / "root", base / "pipeline.yaml"
    synthetic.write_demo_images(images, 16)
    record = {"root": root}
    record["compile"] = _cli("compile", "--image", "cats-vs-dogs:test", "--root", str(root), "--data-dir",
                             str(images), "--metadata-sqlite", str(root / "metadata.sqlite"),
                             "--beam-arg=--direct_running_mode=in_memory", "--package", str(package), *TINY,
                             "--no-tflite",  # TFLite export is checked by the LocalDagRunner e2e tests
                             "--min-accuracy", "0", "--max-accuracy-drop", "1")
    submit = ["submit", "--local", "--package", str(package), "--kfp-outputs", str(base / "kfp")]
    metadata = root / "metadata.sqlite"

    racers = [subprocess.Popen([sys.executable, str(ROOT / "pipeline_runner.py"), *submit[:-1], str(base / name)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
              for name in ("kfp-a", "kfp-b")]
    finished = [subprocess.CompletedProcess(r.args, r.wait(timeout=1200), *r.communicate()) for r in racers]
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
    record["third"] = _cli(*submit, "--data-dir", str(more))
    record["third_states"], store, run = latest_run_states(metadata)
    record["third_evaluator_models"] = evaluator_models(store, run)
    record["versions_after_third"] = sorted(os.listdir(root / "serving_model"))

    # history and rollback on the deployment's root and store, as from a laptop with the store port-forwarded
    on_root = ["--root", str(root), "--metadata-sqlite", str(metadata)]
    held = lease.acquire(root, "a-run-in-progress")
    record["rollback_while_held"] = _cli("rollback", *on_root, "--to", "1")
    lease.release(root, held.run_id)
    record["rollback"] = _cli("rollback", *on_root, "--to", "1", "--reason", "version 2 misreads night photos")
    record["models"] = _cli("models", *on_root, "--json")
    record["models_without_store"] = _cli("models", "--root", str(root))

    all_cats = base / "all-cats"
    (all_cats / "cat").mkdir(parents=True)
    for path in sorted(images.rglob("*.jpg")):
        shutil.copy(path, all_cats / "cat" / path.name)
    record["gate"] = _cli(*submit, "--data-dir", str(all_cats))
    record["gate_states"], _, _ = latest_run_states(metadata)
    record["versions_after_gate"] = sorted(os.listdir(root / "serving_model"))
    return record


def _summary(result):
    """The run summary the exit handler wrote for the run `submit --local` printed."""
    (line,) = [line for line in (result.stdout + result.stderr).splitlines() if "summary and report" in line]
    folder = line.rsplit(" in ", 1)[-1]
    return json.load(open(os.path.join(folder, "run_summary.json"))), folder


def test_compile_writes_the_rehearsal_package(runs):
    assert runs["compile"].returncode == 0, runs["compile"].stderr[-3000:]


def test_first_run_executes_every_node_once_and_pushes_version_1(runs):
    result = runs["first"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    states = runs["first_states"]
    assert set(states) == set(pipeline_lib.NODE_IDS)
    assert all(s == ["COMPLETE"] for s in states.values()), states
    assert runs["versions_after_first"] == ["1"]
    assert runs["spans_after_first"] == ["span-1"]
    summary, folder = _summary(result)
    assert summary["pushed_version"] == 1 and summary["blessed"] is True and summary["error"] is None
    assert os.path.exists(os.path.join(folder, "report", "index.html"))
    assert not (runs["root"] / ".pipeline.lock").exists(), "the exit handler released the root"


def test_a_run_started_while_another_holds_the_root_is_refused_and_reports_it(runs):
    winner, loser = runs["racers"]
    assert loser.returncode == 1, loser.stdout[-3000:] + loser.stderr[-3000:]
    assert "error: another run of this pipeline is in progress (run local-" in loser.stderr
    summary, _ = _summary(loser)
    assert summary["error"].startswith("refused: another run of this pipeline is in progress")
    assert summary["nodes"] == [] and summary["pushed_version"] is None
    assert summary["run_id"] not in winner.stdout


def test_unchanged_rerun_is_cached_in_mlmd_and_pushes_nothing(runs):
    assert runs["second"].returncode == 0, runs["second"].stderr[-3000:]
    states = runs["second_states"]
    assert {node: states[node] for node in COMPONENTS} == {node: ["CACHED"] for node in COMPONENTS}
    assert runs["versions_after_second"] == ["1"]
    assert runs["served_after_second"] == runs["served_after_first"]


def test_new_images_make_a_new_span_evaluated_against_version_1(runs):
    assert runs["third"].returncode == 0, runs["third"].stderr[-3000:]
    assert (runs["root"] / "examples" / "span-2").is_dir()
    states = runs["third_states"]
    assert states[pipeline_lib.TRAINER] == ["COMPLETE"] and states[pipeline_lib.EVALUATOR] == ["COMPLETE"]
    served = json.load(open(runs["root"] / "serving_model" / "1" / "assets.extra" / "push.json"))["model_uri"]
    assert served in runs["third_evaluator_models"], "the baseline must be the model served as version 1"
    assert len(runs["third_evaluator_models"]) == 2
    assert runs["versions_after_third"] == ["1", "2"]


def test_a_run_the_data_gate_stops_is_reported_by_the_exit_handler(runs):
    result = runs["gate"]
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Inner task failed: 'anomaliesgate'" in result.stderr
    summary, folder = _summary(result)
    assert summary["failed"] and summary["error"].startswith(f"failed at {pipeline_lib.ANOMALIES_GATE}: ")
    assert "DataAnomaliesError: 2 data anomalies found" in summary["error"], summary["error"]  # train and eval
    assert runs["gate_states"][pipeline_lib.ANOMALIES_GATE] == ["FAILED"]
    assert pipeline_lib.TRAINER not in runs["gate_states"]
    assert runs["versions_after_gate"] == ["1", "2", "3"]
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
