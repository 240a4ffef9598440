"""The real pipeline on LocalDagRunner: four runs of the CLI on a tiny generated set.

Its test split (a few images) is below the data gate's default floor of 30 (--min-eval-examples), so:
1. First run, with --allow-anomalies: every component executes once; the model is blessed and pushed as version 1.
2. The same without --allow-anomalies: the gate stops it before Transform, naming the split; nothing pushed.
3. Rerun, as the first: every component is cached; nothing is pushed.
4. Rerun with min_accuracy above 1.0: not blessed, nothing pushed, version 1 intact.
MLMD is read here directly, not through the project's own summary code. Runs 1, 3 and 4 are processes of their
own (their output is checked for warnings, which Python shows once per process); run 2 goes through the command
line's entry point in this process (tests.helpers.run_cli's in_process).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from contract import layout, served
from contract import metadata as node_ids
from ingest import synthetic
from tests.helpers import (
    CHEAP_BASE,
    CHEAP_BASE_BLOCKS,
    CHEAP_FINE_TUNE_FROM,
    CHEAP_TRAINING,
    DEFAULT_NODE_IDS,
    ROOT,
    cli_in_process,
    latest_run_states,
    run_cli,
    tree_digest,
)

pytestmark = pytest.mark.e2e

# Every package of the project (and the CLI module): none may be needed to serve the pushed model.
PROJECT_PACKAGES = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"pipeline_runner"}
# With the default floor of the judged split the gate finds a problem, which --allow-anomalies lets through.
ALLOWED = [*CHEAP_TRAINING, "--allow-anomalies"]
STOPPED_BEFORE = {node_ids.TRANSFORM, node_ids.TRAINER, node_ids.EVALUATOR, node_ids.PUSHER}

def _resolver_outputs(store, run):
    for execution in store.get_executions_by_context(run.id):
        if any(c.name.endswith("." + node_ids.BASELINE_RESOLVER)
               for c in store.get_contexts_by_execution(execution.id)):
            events = store.get_events_by_execution_ids([execution.id])
            return sorted(e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT)
    return None


def _anomalies_allowed(store, run):
    """The count of problems the data gate let through in `run` (on the schema it passed on)."""
    for execution in store.get_executions_by_context(run.id):
        if any(c.name.endswith("." + node_ids.ANOMALIES_GATE) for c in store.get_contexts_by_execution(execution.id)):
            ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                   if e.type == metadata_store_pb2.Event.OUTPUT]
            (schema,) = store.get_artifacts_by_id(ids)
            return schema.custom_properties["anomalies_allowed"].int_value
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data, out = base / "images", base / "out"
    synthetic.write_demo_images(data, 16)
    record = {"data": data, "out": out}

    record["first"], record["first_summary"] = run_cli(data, out, *ALLOWED, "--min-accuracy", "0")
    record["first_states"], store, run = latest_run_states(out / "metadata.sqlite")
    record["first_resolved"] = _resolver_outputs(store, run)
    record["first_allowed"] = _anomalies_allowed(store, run)
    record["served_after_first"] = tree_digest(out / "serving_model")
    record["first_report"] = base / "first_report"
    shutil.copytree(out / "report", record["first_report"])

    record["floor"], record["floor_summary"] = run_cli(data, out, *CHEAP_TRAINING, "--min-accuracy", "0",
                                                       in_process=True)
    record["floor_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["versions_after_floor"] = sorted(os.listdir(out / "serving_model"))

    record["second"], record["second_summary"] = run_cli(data, out, *ALLOWED, "--min-accuracy", "0")
    record["second_states"], store, run = latest_run_states(out / "metadata.sqlite")
    record["second_resolved"] = _resolver_outputs(store, run)
    record["versions_after_second"] = sorted(os.listdir(out / "serving_model"))

    record["strict"], record["strict_summary"] = run_cli(data, out, *ALLOWED, "--min-accuracy", "1.01")
    record["strict_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["versions_after_strict"] = sorted(os.listdir(out / "serving_model"))
    record["served_after_strict"] = tree_digest(out / "serving_model")
    return record


def test_first_run_executes_every_component_once_and_pushes_version_1(runs):
    assert runs["first"].returncode == 0, runs["first"].stdout[-3000:] + runs["first"].stderr[-3000:]
    assert runs["first_states"] == {node: ["COMPLETE"] for node in DEFAULT_NODE_IDS}
    summary = runs["first_summary"]
    assert summary["blessed"] is True and summary["pushed_version"] == 1
    assert summary["decision"] == "met binary_accuracy >= 0; no baseline yet"
    assert summary["beam_args"] == ["--direct_running_mode=in_memory"]  # small data: no worker processes
    # CHEAP_TRAINING sets --weights none, the epochs and the layer to fine-tune from, not the rest of the from-scratch
    # schedule: the note names what it set for the user, not what the user set
    (note,) = summary["notes"]
    assert "from-scratch schedule --early-stopping-patience 0, --cached-views 0 (" in note
    assert f"note: {note}" in runs["first"].stdout
    assert pathlib.Path(summary["pushed_path"]) == runs["out"] / "serving_model" / "1"
    assert summary["metrics"]["candidate"]["example_count"] > 0
    assert "binary_accuracy" in summary["metrics"]["candidate"]
    by_label = summary["metrics_by_label"]
    assert by_label and set(by_label) <= {"label=0", "label=1"}
    assert sum(m["example_count"] for m in by_label.values()) == summary["metrics"]["candidate"]["example_count"]
    assert "Pipeline cats-vs-dogs" in runs["first"].stdout and "pushed: version 1" in runs["first"].stdout


def test_the_first_run_made_its_absent_output_folder_a_root(runs):
    marker = json.loads((runs["out"] / layout.ROOT_MARKER).read_text())
    assert marker["tool"] == layout.ROOT_MARKER_TOOL and marker["adopted"] is False
    assert "adopted" not in runs["first"].stdout + runs["second"].stdout


def _expected_devices() -> list[str]:
    """Where a run on this machine trains (trainer.devices): every GPU TensorFlow sees, else its CPU."""
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    return [name.rsplit("device:", 1)[-1] for name in gpus] or ["CPU:0"]


def test_the_summary_says_where_and_how_the_model_trained(runs):
    training = runs["first_summary"]["training"]
    expected = _expected_devices()
    assert [device.rsplit("device:", 1)[-1] for device in training["devices"]] == expected
    # the from-scratch schedule augments every epoch: no cached views
    assert training["cached_views"] == 0 and training["cache"] is None
    assert f"trained on: {', '.join(expected)}; every epoch augmented (no cached views)" in runs["first"].stdout
    # the Evaluator scored the span's test split, which the Trainer never read (it checked its TFLite models on
    # the eval split, where it chose its epoch)
    per_split = json.loads((runs["out"] / "examples" / "span-1" / "ingest_report.json").read_text())[
        "examples_per_split"]
    assert sum(per_split.values()) == 32 and per_split["test"] > 0
    assert runs["first_summary"]["judged_split"] == "test"
    assert runs["first_summary"]["metrics"]["candidate"]["example_count"] == per_split["test"]
    assert runs["first_summary"]["tflite"]["images"] == per_split["eval"]


def test_base_weights_writes_the_pushed_models_base_for_weights_file(runs, tmp_path):
    import keras

    from config import TrainingConfig
    from contract import layout
    from trainer import model as model_lib

    out = tmp_path / "base_no_top.h5"
    result = cli_in_process("base-weights", "--output-dir", runs["out"], "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    hint = (f"--weights {out} --alpha 0.35 --base-blocks {CHEAP_BASE_BLOCKS} --fine-tune-from {CHEAP_FINE_TUNE_FROM} "
            "(the model's; any --image-size)")
    assert hint in result.stdout
    pushed = keras.models.load_model(runs["out"] / "serving_model" / "1" / layout.KERAS_MODEL_FILE, compile=False)
    loaded = model_lib.build_base(TrainingConfig(weights=str(out), alpha=0.35, **CHEAP_BASE), 96)  # any image size
    for mine, theirs in zip(loaded.weights, model_lib.get_base(pushed).weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    for name in ("base.keras", "base.weights.h5"):  # the second, Keras 3's own format, --weights could not read
        refused = cli_in_process("base-weights", "--output-dir", runs["out"], "--out", tmp_path / name)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert refused.stderr == (f"error: --out {tmp_path / name}: give a file name ending in .h5, not .weights.h5 "
                                  "(the layout of Keras' ImageNet weights, which --weights reads)\n")
    # inside a pushed version it would break the version's commit record (never served after), and inside the
    # root's own folders it is no file of the pipeline's
    for inside, said in ((runs["out"] / "serving_model" / "1" / "assets.extra" / "b.h5", "the pushed version "),
                         (runs["out"] / "pipeline_root" / "b.h5", "which the pipeline keeps")):
        refused = cli_in_process("base-weights", "--output-dir", runs["out"], "--out", inside)
        assert refused.returncode == 2 and said in refused.stderr and not inside.exists(), refused.stderr
    (tmp_path / "folder.h5").mkdir()
    refused = cli_in_process("base-weights", "--output-dir", runs["out"], "--out", tmp_path / "folder.h5")
    assert refused.returncode == 2
    assert refused.stderr == f"error: --out {tmp_path / 'folder.h5'} is a folder: give the weights file's path\n"
    # The file is written whole beside its place and renamed onto it: a link there is replaced, never written
    # through (it wrote into the user's file the link led to), and an earlier file is said to be replaced.
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / "linked.h5").symlink_to(tmp_path / "notes.txt")
    written = cli_in_process("base-weights", "--output-dir", runs["out"], "--out", tmp_path / "linked.h5")
    assert written.returncode == 0 and "(replacing the link that was there; the file it led to is untouched)" in \
        written.stdout
    assert (tmp_path / "notes.txt").read_text() == "the user's" and not (tmp_path / "linked.h5").is_symlink()
    assert (tmp_path / "linked.h5").read_bytes() == out.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# A Python warning (FutureWarning, RuntimeWarning, UserWarning...), a logging WARNING, a native W-line.
WARNING_LINE = re.compile(r"Warning|WARNING|^W\d{4} ", re.MULTILINE)


def test_runs_print_no_warnings_without_verbose(runs):
    for name in ("first", "second", "strict"):
        output = runs[name].stdout + runs[name].stderr
        noise = [line for line in output.splitlines() if WARNING_LINE.search(line)]
        assert not noise, f"{name} run:\n" + "\n".join(noise[:20])
    assert "TensorSpec" not in runs["first"].stdout  # Keras' export listing


def test_the_pushed_version_carries_its_warmup_requests_and_the_digests_of_its_files(runs):
    from components.serving_pusher import digest_problems

    version = runs["out"] / "serving_model" / "1"
    assert (version / layout.WARMUP_FILE).stat().st_size > 1000  # real eval images
    assert digest_problems(str(version)) == []
    listed = {line.split("  ", 1)[1] for line in (version / layout.DIGESTS_FILE).read_text().splitlines()}
    assert {"saved_model.pb", layout.WARMUP_FILE, layout.KERAS_MODEL_FILE, layout.PUSH_RECORD_FILE,
            layout.MODEL_CARD_FILE} <= listed


def test_the_pushed_version_carries_a_model_card_of_its_run_also_in_the_report(runs):
    summary = runs["first_summary"]
    card = (runs["out"] / "serving_model" / "1" / layout.MODEL_CARD_FILE).read_text()
    assert f"Decision: {summary['decision']}." in card
    low, high = summary["accuracy_intervals"]["candidate"]
    accuracy = summary["metrics"]["candidate"]["binary_accuracy"]
    assert f"| binary_accuracy | {accuracy:.4f} [{low:.4f}, {high:.4f}] |" in card
    assert "Scored on the test split" in card
    assert f"| 1 | folder:{runs['data']} | " in card  # span 1, its source
    assert "Trained from random weights" in card  # CHEAP_TRAINING trains from random weights
    page = (runs["first_report"] / "index.html").read_text()
    assert "<h2 id=card>Model card</h2>" in page and "<h2>Known limits</h2>" in page


def test_pushed_model_loads_in_a_fresh_process_without_project_code(runs, tmp_path):
    images = sorted(str(p) for p in runs["data"].rglob("*.jpg"))[:6] + sorted(
        str(p) for p in runs["data"].rglob("*.jpg"))[-6:]
    script = f"""
import importlib.abc, json, sys
class BlockProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {sorted(PROJECT_PACKAGES)!r}:
            raise ImportError("project module " + name + " must not be needed to serve")
sys.meta_path.insert(0, BlockProject())
import tensorflow as tf
serve = tf.saved_model.load({str(runs["out"] / "serving_model" / "1")!r}).signatures["serving_default"]
paths = {images!r}
out = serve(image_bytes=tf.constant([open(p, "rb").read() for p in paths]))
print(json.dumps({{"p": out["dog_probability"].numpy().tolist(),
                  "c": [c.decode() for c in out["class_name"].numpy()]}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ""}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(output["p"]) == len(images)
    for probability, name in zip(output["p"], output["c"]):
        assert 0.0 <= probability <= 1.0
        assert name == ("dog" if probability >= 0.5 else "cat")


def test_run_report_renders_with_the_evaluators_numbers(runs):
    import tensorflow_model_analysis as tfma
    from PIL import Image

    report = runs["first_report"]
    page = (report / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"confusion_matrix.png", "training_curves.png", "model.png", "sample_predictions.png"} <= set(images)
    for name in images:
        with Image.open(report / name) as image:
            image.load()
            assert image.width > 100 and image.height > 100
    evaluation = runs["first_summary"]["artifacts"]["ModelEvaluation"]
    accuracy = next(kv.value.double_value.value for m in tfma.load_metrics(evaluation)
                    if not m.slice_key.single_slice_keys for kv in m.metric_keys_and_values
                    if kv.key.name == "binary_accuracy")
    low, high = runs["first_summary"]["accuracy_intervals"]["candidate"]
    assert f"{accuracy:.4f} [{low:.4f}, {high:.4f}]" in page  # with its exact interval
    assert "Scored on the test split, images used neither in training nor in choosing the kept epoch" in page
    assert (runs["out"] / "tfdv_statistics.html").stat().st_size > 10_000  # TFDV's own page, beside the report
    assert 'href="../tfdv_statistics.html"' in page and "needs internet" in page
    assert "<h3>Missing values</h3>" in page and "<td>image</td><td>0</td><td>0</td>" in page
    assert f"Span 1 from folder:{runs['data']}" in page
    model = pathlib.Path(layout.serving_model_dir(runs["first_summary"]["artifacts"]["Model"]))
    fidelity = json.loads((model / "assets.extra" / "tflite_fidelity.json").read_text())
    eval_images = fidelity["images"]  # the Trainer's eval split: the test split's images are unseen there
    assert runs["first_summary"]["tflite"] == fidelity
    assert f"of {int(eval_images)} eval images in the SavedModel's class" in runs["first"].stdout
    for kind in ("float16", "int8"):
        assert f"<td>{kind}</td>" in page and f"{100 * fidelity['models'][kind]['agreement']:.1f}%" in page


def test_the_report_folder_works_offline_and_opens_in_a_browser(runs, tmp_path):
    from tests import browser

    online = {path.name: re.findall(r"https?://[^\s\"'<>)]+", path.read_text(errors="replace"))
              for path in runs["first_report"].rglob("*") if path.suffix in (".html", ".css", ".js", ".svg")}
    assert {name: found for name, found in online.items() if found} == {}
    view = browser.open_page(runs["first_report"] / "index.html")
    assert view.errors == []
    assert view.overflow == 0, f"the report is {view.overflow} px wider than a 1280-pixel window"
    assert view.images and all(view.images.values()), view.images
    assert set(view.images) >= {"training_curves.png", "statistics.png", "confusion_matrix.png"}
    (tmp_path / "report.png").write_bytes(view.screenshot)
    from PIL import Image

    with Image.open(tmp_path / "report.png") as shot:
        assert shot.height > 2000  # every section rendered


def test_predict_reports_a_bad_file_and_classifies_the_rest_also_with_a_pushed_tflite_file(runs, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = sorted(runs["data"].rglob("*.jpg"))[:3]
    for path in good:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "broken.jpg").write_bytes(good[0].read_bytes()[:300])
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (photos / "__MACOSX").mkdir()
    (photos / "__MACOSX" / f"._{good[0].name}").write_bytes(b"\x00\x05\x16\x07")
    result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "predict", str(photos),
                             "--output-dir", str(runs["out"]), "--json", "--explain"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]  # 1: some files could not be classified
    assert "warning: 1 of 4 files could not be classified (marked UNREADABLE)" in result.stderr
    assert "note: passed over 1 file(s) and 1 folder(s) the operating system keeps (.DS_Store, __MACOSX/): not " \
           "photos" in result.stderr
    output = json.loads(result.stdout)
    assert output["passed_over"] == [f"{photos}/.DS_Store", f"{photos}/__MACOSX/"]
    by_name = {pathlib.Path(p["path"]).name: p for p in output["predictions"]}
    assert "truncated or corrupt" in by_name["broken.jpg"]["error"]
    for path in good:
        assert by_name[path.name]["class_name"] in ("cat", "dog") and 0 <= by_name[path.name]["dog_probability"] <= 1
    assert output["model"].endswith("serving_model/1")
    from PIL import Image

    sheet = runs["out"] / "predictions" / "contact_sheet.png"  # next to the run, not in the working directory
    assert output["sheet"] == str(sheet) and not (tmp_path / "predictions").exists()
    with Image.open(sheet) as image:
        assert image.width > 200
    # The version's float16 TFLite file, as a device runs it, on the same photos: the same report of the bad file,
    # and the SavedModel's answers within float16's error; its sheet beside the run too.
    tflite = cli_in_process("predict", photos, "--model", runs["out"] / "serving_model" / "1" /
                            layout.TFLITE_FILES["float16"], "--json")
    assert tflite.returncode == 1, tflite.stderr[-2000:]
    on_device = {pathlib.Path(p["path"]).name: p for p in json.loads(tflite.stdout)["predictions"]}
    assert on_device["broken.jpg"]["error"] == by_name["broken.jpg"]["error"]
    assert json.loads(tflite.stdout)["sheet"] == str(sheet)
    for path in good:
        expected, answer = by_name[path.name], on_device[path.name]
        # a probability moves by at most a quarter of the logit's error (the sigmoid's slope is at most 1/4)
        assert abs(answer["dog_probability"] - expected["dog_probability"]) <= FLOAT16_TOLERANCE / 4
        if abs(expected["dog_probability"] - 0.5) > FLOAT16_TOLERANCE / 4:
            assert answer["class_name"] == expected["class_name"]


# logits; the float16 file against the SavedModel, as the retraining scenario bounds it (tests/e2e/test_retraining.py)
FLOAT16_TOLERANCE = 0.25


def test_a_pushed_versions_tflite_file_changed_since_the_push_is_refused(runs, tmp_path):
    version = runs["out"] / "serving_model" / "1"
    copy = tmp_path / "copy"
    shutil.copytree(version, copy)
    (copy / layout.TFLITE_FILES["float16"]).write_bytes((version / layout.TFLITE_FILES["int8"]).read_bytes())
    refused = cli_in_process("predict", sorted(runs["data"].rglob("*.jpg"))[0], "--model",
                             copy / layout.TFLITE_FILES["float16"])
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (f"error: --model {copy / layout.TFLITE_FILES['float16']} is not the file that was "
                              f"pushed: its bytes differ from its digest in {copy / layout.DIGESTS_FILE}\n")


def test_every_run_keeps_its_report_and_the_roots_report_lists_them_with_the_served_models(runs):
    """Four runs: version 1 pushed, then stopped by the data gate, then cached, then not blessed. Each keeps its
    summary and report under runs/<run id>/; the root's report is the newest run's, listing the four newest first,
    and the one that failed or pushed nothing never hides the report of the model still served."""
    from reporting import run_index

    folders = sorted((runs["out"] / "runs").iterdir())
    assert len(folders) == 4 and all((f / layout.SUMMARY_FILE).is_file() and (f / "report" / "index.html").is_file()
                                     for f in folders)
    listed = run_index.runs(runs["out"])
    ids = [runs[name + "_summary"]["run_id"] for name in ("strict", "second", "floor", "first")]
    assert [run["run_id"] for run in listed] == ids, "newest first"
    outcomes = [run["outcome"] for run in listed]
    assert outcomes[3] == "blessed, pushed as version 1" and outcomes[2].startswith("failed: DataAnomaliesError: ")
    assert outcomes[0].startswith("not blessed") and outcomes[1] == "nothing new pushed; version 1 is served"
    assert json.loads((runs["out"] / layout.SUMMARY_FILE).read_text())["run_id"] == ids[0]
    page = (runs["out"] / "report" / "index.html").read_text()
    first = next(run for run in listed if run["run_id"] == ids[3])
    link = f'../runs/{first["folder"]}/report/index.html'
    assert f"The served model, version 1, was pushed by run {ids[3]}: <a href=\"{link}\">its report</a>" in page
    assert (runs["out"] / "report" / link).resolve().is_file()
    assert page.count("<tr><td>") >= 4 and "(this page)" in page and "(serves now)" in page
    assert run_index.SLOT not in page and run_index.SLOT in (folders[0] / "report" / "index.html").read_text()


def test_a_run_says_which_settings_differ_from_the_roots_record(runs):
    record = json.loads((runs["out"] / layout.RUN_SETTINGS_FILE).read_text())
    assert record["settings"]["min_accuracy"] == 1.01 and record["settings"]["weights"] == "none"
    assert "allow_anomalies" not in record["settings"], "--allow-anomalies is one run's, never recorded"
    assert record["source"] == {"kind": "folder", "location": str(runs["data"])}
    changed = f"settings that differ from this root's record: --min-accuracy 1.01 (was 0.0); " \
              f"{runs['out'] / layout.RUN_SETTINGS_FILE} now holds them"
    assert changed in runs["strict_summary"]["notes"] and changed in runs["strict"].stdout
    assert not any("record" in note for note in runs["second_summary"]["notes"]), "the same flags: nothing to say"


def test_the_scheduled_line_run_as_cron_runs_it_trains_with_the_roots_recorded_settings(runs, tmp_path):
    """`schedule --local` with no --data-dir: the line takes the root's recorded source; run through sh in cron's
    bare environment, the run takes the recorded settings (random weights: nothing downloaded) and, as no run
    records --allow-anomalies, the data gate stops it on the test split below its floor, as it stopped the run
    given those flags without --allow-anomalies."""
    root = tmp_path / "root"
    shutil.copytree(runs["out"], root, symlinks=True)
    printed = cli_in_process("schedule", "--local", "--cron", "0 3 * * *", "--output-dir", root)
    assert printed.returncode == 0, printed.stderr
    assert f" run --data-dir {runs['data']} --output-dir {root} >> " in printed.stdout
    assert printed.stderr.startswith(f"each run trains with the settings recorded in {root / layout.RUN_SETTINGS_FILE}")
    assert "--min-accuracy 1.01" in printed.stderr and "--weights none" in printed.stderr
    command = printed.stdout.strip().split(" ", 5)[5]  # what cron hands to sh after the 5 time fields
    assert printed.stderr.endswith(f"\n  {command}\n"), "the line to paste into a shell is cron's own command"
    ran = subprocess.run(["sh", "-c", command], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=600, cwd="/")
    log = (root / "scheduled_runs.log").read_text()
    # cron mails what the night says on stderr: its exit code, its log, its last error line
    said = ran.stderr.splitlines()
    assert said[0] == f"cats-vs-dogs-tfx: the scheduled run exited 1; its output is in {root / 'scheduled_runs.log'}"
    assert len(said) == 2 and "DataAnomaliesError" in said[1], log[-3000:]
    assert f"settings from this root's earlier runs ({root / layout.RUN_SETTINGS_FILE}): " in log
    assert "--weights none" in log and "--image-size 64" in log
    assert "DataAnomaliesError" in log and "span 1 (reused)" in log
    states, _, _ = latest_run_states(root / "metadata.sqlite")
    assert states[node_ids.ANOMALIES_GATE] == ["FAILED"] and node_ids.TRAINER not in states
    # the versions as they were; the serving config, copied with the root, names the copy's folder now
    config = served.read_config(str(root / "serving_model"))
    assert config.base_path == str(root / "serving_model")
    assert config.version == served.read_config(str(runs["out"] / "serving_model")).version
    original = served.ServingConfig(config.name, str(runs["out"] / "serving_model"), config.version)
    served.write_config(str(root / "serving_model"), original)  # the config as copied: every other byte the same
    assert tree_digest(root / "serving_model") == runs["served_after_strict"]
    assert "models.config named " in log and ", this folder's place before its root was moved or copied" in log


def test_allow_anomalies_lets_a_run_through_the_gate_and_says_how_many(runs):
    assert runs["first_allowed"] == 1  # the test split below the floor, let through


def test_a_test_split_below_the_floor_stops_the_run_before_training(runs):
    result, summary = runs["floor"], runs["floor_summary"]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    per_split = json.loads((runs["out"] / "examples" / "span-1" / "ingest_report.json").read_text())[
        "examples_per_split"]
    count = per_split["test"]
    assert 0 < count < 30
    assert (f"[test] only {count} example{'' if count == 1 else 's'}: at least 30 are needed to judge a model"
            in summary["error"]), summary["error"]
    assert "--allow-anomalies" in summary["error"]
    assert runs["floor_states"][node_ids.ANOMALIES_GATE] == ["FAILED"]
    assert not STOPPED_BEFORE & set(runs["floor_states"]), runs["floor_states"]
    assert runs["versions_after_floor"] == ["1", served.CONFIG_FILE]


def test_rerun_with_no_new_data_is_cached_and_pushes_nothing(runs):
    assert runs["second"].returncode == 0, runs["second"].stderr[-3000:]
    components = [n for n in DEFAULT_NODE_IDS if n not in node_ids.RESOLVER_IDS]
    assert {n: runs["second_states"][n] for n in components} == {n: ["CACHED"] for n in components}
    # The resolver is a system node: it records each resolution, and must resolve the same artifacts.
    assert runs["second_resolved"] == runs["first_resolved"]
    assert runs["versions_after_second"] == ["1", served.CONFIG_FILE]
    assert runs["second_summary"]["pushed_version"] == 1  # the cached push, not a new one
    assert "span 1 (reused)" in runs["second"].stdout
    assert "pushed: nothing new; version 1" in runs["second"].stdout
    assert "  blessed: yes (met binary_accuracy >= 0; no baseline yet) when this model was first evaluated (cached)" \
        in runs["second"].stdout.splitlines(), "the blessing is the first run's, not a judgment of this one"


def test_impossible_threshold_is_not_blessed_and_keeps_version_1_intact(runs):
    assert runs["strict"].returncode == 0, "a run that completes unblessed is not a failure"
    summary = runs["strict_summary"]
    assert summary["blessed"] is False and summary["pushed_version"] is None
    assert "below the minimum 1.01" in summary["decision"]
    assert runs["strict_states"][node_ids.EVALUATOR] == ["COMPLETE"]
    assert runs["strict_states"][node_ids.TRAINER] == ["CACHED"]
    assert runs["versions_after_strict"] == ["1", served.CONFIG_FILE]
    serving = runs["out"] / "serving_model"
    assert served.read_config(str(serving)) == served.ServingConfig(served.MODEL_NAME, str(serving), 1)
    assert runs["served_after_strict"] == runs["served_after_first"]


# --- monitor: traffic against the served model's data, on a copy of the root (the tests above read the original) ---

@pytest.fixture(scope="module")
def monitored(runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("monitored") / "root"
    shutil.copytree(runs["out"], root, symlinks=True)
    return root


def _monitor(root, capsys, *flags):
    import pipeline_runner

    code = pipeline_runner.main(["monitor", "--output-dir", str(root), "--json", *flags])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_monitor_has_nothing_to_check_in_too_small_a_window_and_refuses_one_too_damaged_to_test(monitored, capsys):
    from monitoring import looks

    looks.write_traffic(str(monitored / "traffic"), looks.images("cartoon", 4, seed=999), 1, start_ms=1_000)
    code, said, err = _monitor(monitored, capsys)  # a schedule's first hours: no failure each hour
    assert code == 0 and err == "" and said["checked"] is False and said["drift"] is None, err
    assert said["verdict"].startswith("nothing to check yet: the window holds 4 images of traffic under ")
    assert said["verdict"].endswith("; a check needs at least 30 (--min-window)")
    from orchestration.engines import kfp_tasks  # the monitoring package's task: a recurring run that succeeds

    store = monitored.parent / "deployment.sqlite"  # a deployment's store: its pushes into this root
    shutil.copy(monitored / "metadata.sqlite", store)
    _pushed_into(store, monitored)
    pages = monitored.parent / "task-page.html", monitored.parent / "task-page.md"
    line = kfp_tasks.monitor(str(monitored), node_ids.sqlite_store(store), {}, *map(str, pages), say=lambda _: None)
    assert line == said["verdict"] and pages[1].read_text().startswith("**Nothing to check yet**: the window holds 4")
    assert "the window holds 4 images" in pages[0].read_text()
    # 29 images that decode and one that does not: the next traffic fills the window, nothing to check yet
    looks.write_traffic(str(monitored / "traffic"), [*looks.images("cartoon", 25, seed=998), b"not an image"], 1,
                        start_ms=5_000)
    code, said, err = _monitor(monitored, capsys)
    assert code == 0 and said["checked"] is False and said["verdict"].startswith(
        "nothing to check yet: of the window's 30 images, 29 of those sampled could be measured (image "), err
    # the image that does not decode is named by where it was recorded, to be found
    span = max(int(p.name.removeprefix("span-")) for p in (monitored / "traffic").glob("span-*"))
    assert f" (traffic span {span}, record 25, request " in said["verdict"], said["verdict"]
    # a window mostly of images that do not decode: traffic too damaged to check
    looks.write_traffic(str(monitored / "traffic"), [b"not an image %d" % i for i in range(40)], 1, start_ms=10_000)
    code, _, err = _monitor(monitored, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "of the window's 70 images, 29 of those sampled could be measured (image " in err
    # the served version's span gone from the root: named, where it read as a reference of no images
    (monitored / "examples" / "span-1").rename(monitored / "span-1-aside")
    code, _, err = _monitor(monitored, capsys)
    (monitored / "span-1-aside").rename(monitored / "examples" / "span-1")
    assert code == 2 and err == (f"error: the served version 1 was trained on span 1, whose folder is gone from "
                                 f"{monitored / 'examples'}: its held-out images, the check's reference, cannot be "
                                 "read; nothing was checked\n")
    assert not (monitored / "monitoring").exists() and not (monitored / "labeling").exists()
    # a span whose report is damaged stops the check, naming it and how to check the rest; no warning above it
    # says it is passed over
    report = monitored / "traffic" / "span-1" / "traffic_report.json"
    kept = report.read_bytes()
    report.write_text("{")
    code, _, err = _monitor(monitored, capsys)
    report.write_bytes(kept)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {report}"), err
    assert err.endswith(f"; to check the rest of the traffic, move that span's folder out of {monitored / 'traffic'} "
                        "(it is then never read)\n"), err


def test_traffic_drawn_as_the_training_data_raises_no_alarm_and_queues_nothing(monitored, capsys):
    from monitoring import looks, record

    written = looks.write_traffic(str(monitored / "traffic"), looks.images("cartoon", 120), 1, start_ms=2_000_000)
    code, result, err = _monitor(monitored, capsys, "--window", "120", "--false-alarm-rate", "0.01")
    assert code == 0, err
    assert result["drift"] is False and result["served_version"] == 1 and result["labeling_queue"] is None
    assert [t["name"] for t in result["tests"]] == ["height", "width", "brightness", "saturation", "score",
                                                    "features"]
    for test in result["tests"]:
        assert set(test) >= {"name", "statistic", "threshold", "p_value", "drift"}
        assert test["threshold"] == pytest.approx(0.01 / 6) and test["p_value"] >= test["threshold"]
    assert result["window"]["images"] == 120 and result["window"]["spans"] == written
    # TFDV's comparator is shown beside the tests, on the properties it profiles
    assert [f["name"] for f in result["tfdv"]["features"]] == ["height", "width", "brightness", "saturation", "score"]
    assert result["reference"]["spans"] == [1]
    assert pathlib.Path(result["report"]).is_file() and not (monitored / "labeling").exists()
    (check,) = record.checks(str(monitored / "metadata.sqlite"))
    assert check["drift"] == 0 and check["served_version"] == 1 and check["tests"] == result["tests"]


def test_a_drifted_window_alarms_is_recorded_and_its_images_queued_then_ingested_once_sorted(monitored, capsys,
                                                                                             monkeypatch):
    import errno

    import pipeline_runner
    from monitoring import looks, record

    looks.write_traffic(str(monitored / "traffic"), looks.images("sketch", 120), 1, start_ms=4_000_000)
    # A check that fails after its queue is published (its record refused: a full disk) takes the queue with it:
    # left, it named a report no record knew and held its images from every later queue.
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(record, "record_check", full_disk)
        code = pipeline_runner.main(["monitor", "--output-dir", str(monitored), "--window", "120"])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "Traceback" not in err, err
    assert not (monitored / "labeling" / "queue-1").exists()
    code, result, err = _monitor(monitored, capsys, "--window", "120")
    assert code == 0, err
    assert result["drift"] is True
    assert {"brightness", "saturation"} <= {test["name"] for test in result["tests"] if test["drift"]}
    page = pathlib.Path(result["report"]).read_text()
    assert "<b>Drift</b>" in page and (pathlib.Path(result["report"]).parent / "distributions.png").is_file()
    checks = record.checks(str(monitored / "metadata.sqlite"))
    assert [c["drift"] for c in checks] == [0, 1] and checks[1]["labeling_queue"] == result["labeling_queue"]
    # lineage: the check read the served version's Model
    store = node_ids.open_store(node_ids.sqlite_store(monitored / "metadata.sqlite"), read_only=True)
    (execution,) = store.get_executions_by_type("DriftCheck")[1:]
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    assert [store.get_artifact_types_by_id([a.type_id])[0].name for a in store.get_artifacts_by_id(inputs)] == ["Model"]

    queue = pathlib.Path(result["labeling_queue"])
    assert queue == monitored / "labeling" / "queue-1"
    unsorted = sorted((queue / layout.QUEUE_UNSORTED).iterdir())
    assert len(unsorted) == 120 and json.loads((queue / layout.QUEUE_RECORD).read_text())["images"] == 120
    for path in unsorted[:10]:  # looks.images draws cats and dogs in turn; the file name starts with the index
        path.rename(queue / ("cat" if int(path.name[:6]) % 2 == 0 else "dog") / path.name)
    code = pipeline_runner.main(["ingest", "--data-dir", str(queue), "--output-dir", str(monitored)])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((monitored / "examples" / "span-2" / layout.INGEST_REPORT).read_text())
    assert report["examples_per_label"] == {"cat": 5, "dog": 5} and report["counts"]["quarantined"] == 110
    assert all(q["reason"].startswith("not sorted") for q in report["quarantined"])


def _pushed_into(store_path, root):
    """The store as a deployment at `root` keeps it: its Pusher recorded every push under `root`. (The monitored
    root is a copy, and a deployment's store is scoped to its own root's pushes.)"""
    from config import PipelineConfig
    from orchestration.run import reconcile
    from reporting import model_history

    store = node_ids.open_store(node_ids.sqlite_store(store_path))
    for version in model_history.pushed_versions(store):
        reconcile.record_push(store, PipelineConfig().name, "ServingPusher", version.model_id, version.version,
                              f"{root}/serving_model/{version.version}", {})


def test_monitor_checks_a_deployments_root_with_the_store_it_is_given(monitored, tmp_path, capsys):
    """`monitor --root ROOT --metadata-sqlite PATH`, as on a deployment (there, mostly --metadata-grpc): the traffic
    and the reports are the root's, the served model's record and the check's are the given store's."""
    import pipeline_runner
    from monitoring import looks, record

    looks.write_traffic(str(monitored / "traffic"), looks.images("cartoon", 40, seed=7), 1, start_ms=6_000_000)
    store = tmp_path / "deployment.sqlite"  # the root keeps no store of its own meanwhile: only this one is read
    os.replace(monitored / "metadata.sqlite", store)
    try:
        _pushed_into(store, monitored)
        before = record.checks(str(store))
        code = pipeline_runner.main(["monitor", "--root", str(monitored), "--metadata-sqlite", str(store), "--json",
                                     "--window", "40", "--no-queue"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert not (monitored / "metadata.sqlite").exists()
        checks = record.checks(str(store))
    finally:
        os.replace(store, monitored / "metadata.sqlite")
    result = json.loads(out)
    assert result["served_version"] == 1 and result["reference"]["spans"] == [1]
    assert result["window"]["images"] == 40 and result["labeling_queue"] is None
    assert pathlib.Path(result["report"]).is_file() and result["report"].startswith(str(monitored / "monitoring"))
    assert len(checks) == len(before) + 1 and checks[-1]["id"] == result["mlmd_id"]
    assert checks[-1]["drift"] == int(result["drift"])
    assert checks[-1]["uri"] == str(pathlib.Path(result["report"]).parent)


class _BucketLease:
    """orchestration.root.lease_storage.GcsObject on the modelled bucket: created only if absent, replaced or
    deleted only at the generation read, as Cloud Storage's ifGenerationMatch preconditions do."""

    def __init__(self, bucket, uri: str):
        self.bucket, self.uri = bucket, uri
        self.generations = bucket.__dict__.setdefault("generations", {})

    def create(self, text: str) -> bool:
        if self.bucket.exists(self.uri):
            return False
        return self._write(text)

    def read(self):
        if not self.bucket.exists(self.uri):
            return None
        return self.bucket.read(self.uri).decode(), self.generations[self.uri]

    def replace(self, text: str, token: int) -> bool:
        return self.bucket.exists(self.uri) and self.generations[self.uri] == token and self._write(text)

    def delete(self, token: int) -> bool:
        if not self.bucket.exists(self.uri) or self.generations[self.uri] != token:
            return False
        self.bucket.remove(self.uri)
        return True

    def _write(self, text: str) -> bool:
        self.bucket.write(self.uri, text.encode())
        self.generations[self.uri] = self.generations.get(self.uri, 0) + 1
        return True


def test_monitor_checks_a_gs_root_through_the_object_store(monitored, tmp_path, capsys, monkeypatch):
    """`monitor --root gs://...`: every read and write of the root (its marker, lease, served model, held-out
    spans, traffic, report and labeling queue) goes through contract.storage to the bucket (tests/object_store.py),
    none to this machine's copy; the check is recorded in the given store."""
    import pipeline_runner
    from contract import storage
    from monitoring import looks, record
    from orchestration.root import lease
    from tests.object_store import FakeObjectStore

    bucket_root = "gs://bucket/cats"
    needed = [monitored / layout.ROOT_MARKER, *(path for part in ("serving_model", "examples")
                                                for path in (monitored / part).rglob("*") if path.is_file())]
    bucket = FakeObjectStore({f"{bucket_root}/{path.relative_to(monitored).as_posix()}": path.read_bytes()
                              for path in needed})
    monkeypatch.setattr(storage, "backend", bucket)
    real_lease = lease._storage
    monkeypatch.setattr(lease, "_storage", lambda path: _BucketLease(bucket, path) if path.startswith("gs://")
                        else real_lease(path))
    written = looks.write_traffic(f"{bucket_root}/traffic", looks.images("sketch", 40, seed=11), 1,
                                  start_ms=8_000_000)
    store = tmp_path / "deployment.sqlite"
    shutil.copy(monitored / "metadata.sqlite", store)
    _pushed_into(store, bucket_root)
    here_before = sorted(str(path) for path in monitored.rglob("*"))
    code = pipeline_runner.main(["monitor", "--root", bucket_root, "--metadata-sqlite", str(store), "--json",
                                 "--window", "40"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["window"]["images"] == 40 and result["window"]["spans"] == written
    assert result["reference"]["spans"] == [1] and result["served_version"] == 1
    assert result["report"].startswith(f"{bucket_root}/monitoring/check-") and bucket.exists(result["report"])
    # the spans copied hold the queue-1 an earlier test ingested (its folder is not in the bucket): not reused
    assert result["drift"] is True and result["labeling_queue"] == f"{bucket_root}/labeling/queue-2"
    queued = bucket.files(f"{bucket_root}/labeling/queue-2/{layout.QUEUE_UNSORTED}")
    assert len(queued) == 40 and bucket.exists(f"{bucket_root}/labeling/queue-2/{layout.QUEUE_RECORD}")
    hidden = [name for name in bucket.objects if "/." in name.removeprefix(bucket_root)]
    assert hidden == [f"{bucket_root}/{layout.ROOT_MARKER}"], "no staging, no lease left"
    assert record.checks(str(store))[-1]["id"] == result["mlmd_id"]
    assert sorted(str(path) for path in monitored.rglob("*")) == here_before, "nothing written on this machine"


def test_the_monitoring_package_runs_its_check_with_kfps_local_runner(monitored, tmp_path, capsys):
    """The package `compile --monitor-package` writes, for this root and a SQLite store (a rehearsal): its one task
    runs `monitor` in a subprocess of kfp.local, records the check and puts the report on the run's page."""
    import pipeline_runner
    from config import PipelineConfig
    from monitoring import looks, record
    from monitoring.settings import MonitorSettings
    from orchestration.engines import kubeflow

    looks.write_traffic(str(monitored / "traffic"), looks.images("cartoon", 40, seed=8), 1, start_ms=8_000_000)
    store = tmp_path / "deployment.sqlite"
    shutil.copy(monitored / "metadata.sqlite", store)
    _pushed_into(store, monitored)
    before = len(record.checks(str(store)))
    package = kubeflow.compile_monitor_package(
        PipelineConfig(), str(tmp_path / "monitor.yaml"),
        kubeflow.Deployment(image="cats-vs-dogs:test", root=str(monitored),
                            metadata_store=node_ids.sqlite_store(store)),
        MonitorSettings(window=40, queue=False))
    code = pipeline_runner.main(["submit", "--local", "--package", package, "--kfp-outputs", str(tmp_path / "kfp")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"local monitoring run finished: its drift report is under {monitored / 'monitoring'}" in out
    (check,) = record.checks(str(store))[before:]
    assert check["served_version"] == 1 and check["window_images"] == 40
    (page,) = (tmp_path / "kfp").rglob("drift_report")
    assert "data:image/png;base64," in page.read_text(), "one file: the figure inlined for the run page"


# --- the loop closed: scheduled runs after the queue's ingest (last: they add span 3 to the monitored root) ---

def _sha256s(files, compression=""):
    found = set()
    for path in files:
        for record in tf.data.TFRecordDataset(str(path), compression_type=compression).as_numpy_iterator():
            found.add(tf.train.Example.FromString(record).features.feature["image_sha256"].bytes_list.value[0])
    return found


def _read_by_trainer(metadata):
    """(URI, {split: image digests}) of the Examples the newest run's Trainer read."""
    _, store, run = latest_run_states(metadata)
    for execution in store.get_executions_by_context(run.id):
        if any(c.name.endswith("." + node_ids.TRAINER) for c in store.get_contexts_by_execution(execution.id)):
            ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                   if e.type == metadata_store_pb2.Event.INPUT]
            (examples,) = [a for a in store.get_artifacts_by_id(ids)
                           if store.get_artifact_types_by_id([a.type_id])[0].name == "Examples"]
            return examples.uri, {split: _sha256s(pathlib.Path(examples.uri).glob(f"Split-{split}/*"), "GZIP")
                                  for split in layout.SPLITS}
    raise AssertionError("the newest run has no Trainer execution")


def test_scheduled_runs_after_a_queue_was_ingested_train_on_its_labeled_images_and_ingest_nothing_new(
        runs, monitored):
    """The queue ingested above is span 2. A run offline with a local weights file (written by `base-weights`) and
    settings of its own, on a data folder that has changed since span 1, ingests it as span 3, carrying the queue's
    images, which its Trainer reads in the splits they had; the next
    scheduled run (the printed crontab line, run as cron runs it, with the settings the root recorded), on the same
    data, reuses span 3 (the queue's span is no longer the newest, yet nothing is ingested again) and its Trainer,
    cached, read them still."""
    queued = {split: _sha256s((monitored / "examples" / "span-2" / split).glob("images-*")) for split in layout.SPLITS}
    assert sum(map(len, queued.values())) == 10 and queued["train"]
    data = monitored.parent / "scheduled_data"
    shutil.copytree(runs["data"], data)
    synthetic.write_demo_images(data, 17)  # one more image of each class
    # Offline, as a user's own data: a local weights file (the base `base-weights` writes from the first root's
    # pushed model, as the README shows) and settings other than the defaults, recorded with the root
    # (run_settings.json), as --allow-anomalies, one run's, would not be.
    base = monitored.parent / "pets_no_top.h5"
    written = cli_in_process("base-weights", "--output-dir", runs["out"], "--out", base)
    assert written.returncode == 0, written.stderr[-2000:]
    cheap = [value if previous != "--weights" else str(base)
             for previous, value in zip(["", *CHEAP_TRAINING], CHEAP_TRAINING)]
    settings = [*cheap, "--min-eval-examples", "1", "--min-accuracy", "1.01", "--span-window", "1", "--no-tflite"]
    first, first_summary = run_cli(data, monitored, *settings, in_process=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first_summary["training"]["settings"]["weights"] == str(base)
    report = json.loads((monitored / "examples" / "span-3" / layout.INGEST_REPORT).read_text())
    assert [(c["span"], c["examples"]) for c in report["carried"]] == [(2, 10)]
    assert report["examples_written"] == 34 + 10
    uri, read = _read_by_trainer(monitored / "metadata.sqlite")
    assert all(queued[split] <= read[split] for split in layout.SPLITS), "each queued image in the split it had"
    # The next night: the line `schedule --local` prints, run through sh in cron's bare environment, takes the
    # source and the settings the first run recorded: a Trainer given any other setting would train again.
    printed = cli_in_process("schedule", "--local", "--cron", "0 3 * * *", "--output-dir", monitored)
    assert printed.returncode == 0 and f" run --data-dir {data} --output-dir {monitored} >> " in printed.stdout
    assert "--min-eval-examples 1" in printed.stderr and f"--weights {base}" in printed.stderr, printed.stderr
    ran = subprocess.run(["sh", "-c", printed.stdout.strip().split(" ", 5)[5]], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(monitored.parent)}, timeout=600, cwd="/")
    second = (monitored / "scheduled_runs.log").read_text().split("=== run ")[-1]
    assert ran.returncode == 0 and ran.stderr == "", second[-3000:]
    assert "span 3 (reused)" in second and not (monitored / "examples" / "span-4").exists()
    assert latest_run_states(monitored / "metadata.sqlite")[0][node_ids.TRAINER] == ["CACHED"]
    assert _read_by_trainer(monitored / "metadata.sqlite") == (uri, read)
