"""The compiled Kubeflow package, run end to end with the kfp SDK's own local runner.

`compile` writes the package (with a SQLite ML Metadata file and a local root,
as a rehearsal package); `submit --local` loads that YAML with
kfp.components.load_component_from_file and runs every task as a subprocess
with kfp.local's SubprocessRunner. Three runs, as a recurring run would make:
1. first data                  -> every TFX node executed once; version 1 pushed
2. the same data               -> every TFX component CACHED in MLMD; nothing pushed
3. new images in the folder    -> a new span, evaluated against version 1's model
MLMD is read here directly.
"""

import json
import os
import shutil

import pytest

from ingest import synthetic
from pipeline import pipeline as pipeline_lib
from tests.helpers import ROOT, TINY, evaluator_models, latest_run_states, tree_digest

pytestmark = pytest.mark.e2e
COMPONENTS = set(pipeline_lib.NODE_IDS) - pipeline_lib.RESOLVER_IDS


def _cli(*arguments):
    import subprocess
    import sys

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

    record["first"] = _cli(*submit)
    record["first_states"], _, _ = latest_run_states(metadata)
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
    return record


def test_compile_writes_the_rehearsal_package(runs):
    assert runs["compile"].returncode == 0, runs["compile"].stderr[-3000:]


def test_first_run_executes_every_node_once_and_pushes_version_1(runs):
    result = runs["first"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    states = runs["first_states"]
    assert set(states) == set(pipeline_lib.NODE_IDS)
    assert all(s == ["COMPLETE"] for s in states.values()), states
    assert runs["versions_after_first"] == ["1"]
    assert (runs["root"] / "examples" / "span-1").is_dir()
    run_folder = result.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    summary = json.load(open(os.path.join(run_folder, "run_summary.json")))
    assert summary["pushed_version"] == 1 and summary["blessed"] is True
    assert os.path.exists(os.path.join(run_folder, "report", "index.html"))


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
