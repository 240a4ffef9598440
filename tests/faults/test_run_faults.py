"""Real faults during real runs on one output folder, in the order a bad week brings them.

1. a good run                                   -> version 1 pushed
2. new data; Ctrl-C while the Trainer runs       -> exit 130, summary says so, Trainer CANCELED, lock free
3. the same; kill -9 while the Trainer runs      -> nothing pushed, no half version, no stale summary
   the same; the Trainer's outputs on a full disk -> the Trainer fails, nothing pushed, exit 1
4. the same; serving_model on a full disk        -> the push fails cleanly: no staging left, exit 1
5. pipeline_root deleted, metadata kept          -> the run completes (nothing deleted is used), version 2
6. a push killed after publishing version 3, before recording it
   labels broken at the source (every dog filed as a cat)
                                                 -> the run records version 3; the class-balance check stops it
                                                    before Transform
7. a span written by another tool with labels outside {0, 1}
                                                 -> ExampleValidator's schema check stops it, naming the feature
8. images three times the size of the previous span's (another camera)
                                                 -> the size-drift check stops it before Transform
Every pushed version stays byte-identical throughout. The runs that are not interrupted or killed run through
the command line's entry point in this process (tests.helpers.run_cli's in_process).
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
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from contract import features, served
from contract import metadata as node_ids
from ingest import span_report, synthetic
from orchestration.root import lease, run_lock
from tests.helpers import ROOT, TINY, latest_run_states, run_cli, tree_digest

pytestmark = [pytest.mark.faults, pytest.mark.e2e]
# Any model is blessed, so every run that completes pushes; TFLite export is covered by the e2e tests.
SETTINGS = [*TINY, "--min-accuracy", "0", "--max-accuracy-drop", "1", "--no-tflite"]
STOPPED_BEFORE = {node_ids.TRANSFORM, node_ids.TRAINER, node_ids.EVALUATOR, node_ids.PUSHER}


def _ctrl_c_reaches_it():
    """In the child before it runs: SIGINT handled by default, as in a terminal. A suite launched in the background
    of a non-interactive shell has SIGINT ignored, and children inherit that: Ctrl-C would never reach them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(data, out):
    return subprocess.Popen([sys.executable, str(ROOT / "pipeline_runner.py"), "run", "--data-dir", str(data),
                             "--output-dir", str(out), *SETTINGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True, preexec_fn=_ctrl_c_reaches_it)


def _canceled_within(process, metadata, node, seconds):
    """Whether the run took its interrupt within `seconds`: it ended, or `node`'s execution is marked CANCELED."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            return True
        try:
            states, _, _ = latest_run_states(metadata)
        except Exception:  # the store is being written: look again
            states = {}
        if "CANCELED" in states.get(node, []):
            return True
        time.sleep(0.5)
    return False


def _wait_until_running(process, metadata, node, timeout=600):
    """Polls MLMD (read-only, as any observer would) until `node` has a RUNNING execution."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, "the run ended before %s started: %s" % (node, process.communicate())
        try:
            states, _, _ = latest_run_states(metadata)
        except Exception:  # the store is being created or written: look again
            states = {}
        if "RUNNING" in states.get(node, []):
            return
        time.sleep(0.5)
    raise AssertionError(f"{node} never ran")


def _mount_tmpfs(folder, size_bytes):
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    return result.returncode == 0


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    first, more, out = base / "first", base / "more", base / "out"
    synthetic.write_demo_images(first, 16)
    shutil.copytree(first, more)
    synthetic.write_demo_images(more / "new", 6, seed=1)
    metadata = out / "metadata.sqlite"
    record = {"out": out}

    record["good"], record["good_summary"] = run_cli(first, out, *SETTINGS, in_process=True)
    record["served"] = tree_digest(out / "serving_model")
    record["version_1"] = tree_digest(out / "serving_model" / "1")

    process = _start(more, out)
    _wait_until_running(process, metadata, node_ids.TRAINER)
    process.send_signal(signal.SIGINT)
    if not _canceled_within(process, metadata, node_ids.TRAINER, seconds=10):
        # A Ctrl-C that lands while Python runs a finalizer (a tf.data iterator's) is lost, as in any Python
        # program; a person presses it again, as this does while the Trainer still runs.
        process.send_signal(signal.SIGINT)
    record["interrupted"] = process.wait(timeout=300), *process.communicate()
    record["interrupted_summary"] = json.loads((out / "run_summary.json").read_text())
    record["interrupted_states"], _, _ = latest_run_states(metadata)
    record["served_after_interrupt"] = tree_digest(out / "serving_model")
    try:
        with run_lock.exclusive_run(out):
            record["lock_free_after_interrupt"] = True
    except lease.RootBusyError:
        record["lock_free_after_interrupt"] = False

    process = _start(more, out)
    _wait_until_running(process, metadata, node_ids.TRAINER)
    os.killpg(process.pid, signal.SIGKILL)
    record["killed"] = process.wait(timeout=60)
    record["killed_states"], _, killed_run = latest_run_states(metadata)
    record["served_after_kill"] = tree_digest(out / "serving_model")
    record["summary_after_kill"] = (out / "run_summary.json").exists()
    page = out / "report" / "index.html"
    record["report_after_kill"] = page.read_text() if page.is_file() else None
    record["entries_after_kill"] = sorted(os.listdir(out / "serving_model"))

    trainer_outputs = out / "pipeline_root" / node_ids.TRAINER
    if os.geteuid() == 0 and _mount_tmpfs(trainer_outputs, 256 * 1024):  # far too small for a model
        try:
            record["full_training_disk"], record["full_training_disk_summary"] = run_cli(more, out, *SETTINGS,
                                                                                         in_process=True)
            record["full_training_disk_states"], _, _ = latest_run_states(metadata)
            record["served_after_full_training_disk"] = tree_digest(out / "serving_model")
        finally:
            subprocess.run(["umount", str(trainer_outputs)], check=True)
    else:
        record["full_training_disk"] = None

    serving = out / "serving_model"
    size = sum(p.stat().st_size for p in serving.rglob("*") if p.is_file())
    hidden = base / "serving_model.before"
    shutil.copytree(serving, hidden)
    if os.geteuid() == 0 and _mount_tmpfs(serving, size + 256 * 1024):  # room for version 1, not for version 2
        try:
            shutil.copytree(hidden, serving, dirs_exist_ok=True)
            record["full_disk"], record["full_disk_summary"] = run_cli(more, out, *SETTINGS, in_process=True)
            record["full_disk_entries"] = sorted(os.listdir(serving))
            record["served_after_full_disk"] = tree_digest(serving)
            record["full_disk_states"], _, _ = latest_run_states(metadata)
        finally:
            subprocess.run(["umount", str(serving)], check=True)
    else:
        record["full_disk"] = None

    _, store, _ = latest_run_states(metadata)
    record["killed_states_later"] = {
        execution.id: metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        for execution in store.get_executions_by_context(killed_run.id)}

    shutil.rmtree(out / "pipeline_root")
    _as_ingested_before_test_splits(out / "examples")
    record["after_delete"], record["after_delete_summary"] = run_cli(more, out, *SETTINGS, in_process=True)
    record["after_delete_states"], store, _ = latest_run_states(metadata)
    record["deleted_uris_live"] = [a.uri for a in store.get_artifacts() if not os.path.exists(a.uri)
                                   and a.state == metadata_store_pb2.Artifact.LIVE]
    # the served version's folder moved away by hand, then the same data again: everything cached, nothing pushed
    (out / "serving_model" / "2").rename(base / "version-2-aside")
    record["served_gone"], record["served_gone_summary"] = run_cli(more, out, *SETTINGS, in_process=True)
    (base / "version-2-aside").rename(out / "serving_model" / "2")
    _bad_data(base, first, out, record)
    return record


def _as_ingested_before_test_splits(examples):
    """The latest span as ingest wrote spans before there was a test split: train and eval, and a report
    that counts those two (its fingerprint unchanged, so the run reads this span and ingests nothing)."""
    span = max((p for p in examples.glob("span-*")), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(span / "test")
    report = json.loads((span / "ingest_report.json").read_text())
    report["examples_per_split"].pop("test")
    (span / "ingest_report.json").write_text(json.dumps(report, indent=2))


def _example(jpeg: bytes, label: int, name: str) -> bytes:
    feature = {
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        features.HEIGHT_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[200])),
        features.WIDTH_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[200])),
        features.SOURCE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        features.SHA256_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _publish_unrecorded(out, record):
    """Version 1's model published again as version 3 by a Pusher that died before recording it."""
    from components.serving_pusher import push_model
    from contract import layout

    serving = out / "serving_model"
    model_uri = json.loads((serving / "1" / layout.PUSH_RECORD_FILE).read_text())["model_uri"]
    record["unrecorded"] = push_model(str(serving / "1"), str(serving), model_uri=model_uri).version, model_uri


def _bad_data(base, first, out, record):
    """Steps 6 to 8: the data gate stops every run before Transform."""
    _publish_unrecorded(out, record)
    record["served_before_bad_data"] = tree_digest(out / "serving_model")
    all_cats = base / "all_cats"
    (all_cats / "cat").mkdir(parents=True)
    for path in sorted(first.rglob("*.jpg")):
        shutil.copy(path, all_cats / "cat" / path.name)
    record["all_cats"], record["all_cats_summary"] = run_cli(all_cats, out, *SETTINGS, in_process=True)
    record["all_cats_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["served_after_all_cats"] = tree_digest(out / "serving_model")

    record["other_tool_span"] = int(record["all_cats_summary"]["ingest"]["span"]) + 1
    span = out / "examples" / f"span-{record['other_tool_span']}"
    for split, labels in (("train", [0, 1, 5, 7] * 4), ("eval", [0, 1, 5, 1])):
        (span / split).mkdir(parents=True)
        jpegs = [synthetic.render_image("cat", i) for i in range(len(labels))]
        with tf.io.TFRecordWriter(str(span / split / "other-tool.tfrecord.gz"), "GZIP") as writer:
            for i, (jpeg, label) in enumerate(zip(jpegs, labels)):
                writer.write(_example(jpeg, label, f"{split}/{i}.jpg"))
    record["bad_labels"], record["bad_labels_summary"] = run_cli(None, out, *SETTINGS, in_process=True)
    record["bad_labels_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["served_after_bad_labels"] = tree_digest(out / "serving_model")

    larger = base / "larger"
    synthetic.write_demo_images(larger, 16, seed=5, sides=(560, 640))
    record["drift"], record["drift_summary"] = run_cli(larger, out, *SETTINGS, in_process=True)
    record["drift_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["served_after_drift"] = tree_digest(out / "serving_model")


def test_a_good_run_pushes_version_1(week):
    assert week["good"].returncode == 0, week["good"].stderr[-3000:]
    assert week["good_summary"]["pushed_version"] == 1


def test_ctrl_c_says_what_was_interrupted_and_exits_130(week):
    code, stdout, stderr = week["interrupted"]
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    summary = week["interrupted_summary"]
    assert summary["error"] == f"interrupted (Ctrl-C) while {node_ids.TRAINER} ran (marked CANCELED in ML Metadata)"
    assert summary["failed"] and summary["run_id"] != week["good_summary"]["run_id"]
    assert "FAILED: interrupted (Ctrl-C)" in stdout
    assert week["interrupted_states"][node_ids.TRAINER] == ["CANCELED"]
    assert not any("RUNNING" in states for states in week["interrupted_states"].values())
    assert week["lock_free_after_interrupt"]
    assert week["served_after_interrupt"] == week["served"]


def test_kill_9_during_training_leaves_the_served_versions_alone(week):
    assert week["killed"] == -signal.SIGKILL
    assert week["served_after_kill"] == week["served"] and week["entries_after_kill"] == ["1", served.CONFIG_FILE]
    assert not week["summary_after_kill"], "the previous run's summary must not stand in for the killed run's"
    # the root's page says a run went unfinished, and still leads to the served model's report
    assert "has written no report yet" in week["report_after_kill"]
    assert "(serves now)" in week["report_after_kill"] and "its report</a>" in week["report_after_kill"]
    assert week["killed_states"][node_ids.TRAINER] == ["RUNNING"]  # what kill -9 leaves in the store
    next_run = week["full_training_disk"] or week["full_disk"] or week["after_delete"]
    assert (f"an earlier run stopped while {node_ids.TRAINER} ran (killed?); marked CANCELED in ML Metadata"
            in next_run.stdout)
    assert "RUNNING" not in week["killed_states_later"].values() and "CANCELED" in week["killed_states_later"].values()


def _failed_on_a_full_disk(week, step, node):
    """The summary of a run that met a full disk: failed at `node`, said why, exit 1, served versions unchanged."""
    if week[step] is None:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN) to fill a disk for real")
    result, summary = week[step], week[step + "_summary"]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert summary["failed"] and "No space left on device" in summary["error"]
    assert week[step + "_states"][node] == ["FAILED"]
    assert week["served_after_" + step] == week["served"]
    return summary


def test_full_disk_during_training_fails_cleanly_and_hidden_outputs_come_back(week):
    summary = _failed_on_a_full_disk(week, "full_training_disk", node_ids.TRAINER)
    # The mount hid version 1's model: it was marked DELETED for that run and is LIVE again once visible, so the
    # next run (the full-disk push below) evaluates against it.
    assert any("Trainer/model" in m for m in summary["missing"])
    if week["full_disk"] is not None:
        assert "baseline" in week["full_disk_summary"]["metrics"]


def test_full_disk_during_the_push_fails_cleanly(week):
    summary = _failed_on_a_full_disk(week, "full_disk", node_ids.PUSHER)
    assert summary["pushed_version"] is None
    assert week["full_disk_entries"] == ["1", served.CONFIG_FILE], "no staging copy or half version may stay behind"


def test_deleted_pipeline_root_is_recomputed_not_used(week):
    result, summary = week["after_delete"], week["after_delete_summary"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert any("StatisticsGen/statistics" in m for m in summary["missing"])
    assert any(m.startswith("Model ") and "Trainer/model" in m for m in summary["missing"])
    assert "earlier outputs were gone from disk" in result.stdout
    components = {n: s for n, s in week["after_delete_states"].items() if n not in node_ids.RESOLVER_IDS}
    assert components == {n: ["COMPLETE"] for n in components}
    assert "baseline" not in summary["metrics"], "version 1's model is gone: nothing to compare with"
    assert summary["pushed_version"] == 2
    # its span has train and eval only: read as it is, judged on eval, and the figures called optimistic
    assert summary["judged_split"] == "eval"
    assert "which also chose the kept epoch" in result.stdout and "optimistic" in result.stdout
    assert week["deleted_uris_live"] == []
    assert tree_digest(week["out"] / "serving_model" / "1") == week["version_1"]


def test_a_run_that_leaves_nothing_servable_says_so_and_fails(week):
    """The served version's folder gone: a run on unchanged data pushes nothing, so nothing a server can load is
    served after it; it says so, not that the version is served, and exits 1 (a scheduled run's log shows it)."""
    result, summary = week["served_gone"], week["served_gone_summary"]
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert ("  pushed: nothing new (this model is version 2, pushed earlier); nothing a server can load is served "
            "(below)") in result.stdout
    assert summary["error"].startswith("nothing a server can load is served: version 2 (named in models.config) is "
                                       "damaged: "), summary["error"]
    assert summary["error"].endswith("`models` lists the versions, `rollback --to N` serves one of them again")
    assert re.search(r"\n  Trainer +cached ", result.stdout) and re.search(r"\n  ServingPusher +cached ",
                                                                         result.stdout), result.stdout


def test_labels_broken_at_the_source_stop_before_training(week):
    result, summary = week["all_cats"], week["all_cats_summary"]
    assert result.returncode == 1
    assert summary["ingest"]["span"] == 3  # after the good run's span and the new data's
    assert "class balance" in summary["error"] and "label 1: 0" in summary["error"]
    states = week["all_cats_states"]
    assert states[node_ids.ANOMALIES_GATE] == ["FAILED"]
    assert not STOPPED_BEFORE & set(states), f"ran past the gate: {states}"
    assert week["served_after_all_cats"] == week["served_before_bad_data"]


def test_out_of_domain_labels_from_another_tool_stop_before_training(week):
    result, summary = week["bad_labels"], week["bad_labels_summary"]
    assert result.returncode == 1, result.stdout[-2000:]
    assert "running on the spans" in result.stdout and f"span {week['other_tool_span']}" in result.stdout
    # a span without an ingest report is counted record by record: a small one runs in process, no worker processes
    assert summary["beam_args"] == ["--direct_running_mode=in_memory"]
    assert "feature 'label'" in summary["error"]
    states = week["bad_labels_states"]
    assert states[node_ids.ANOMALIES_GATE] == ["FAILED"]
    assert not STOPPED_BEFORE & set(states)
    assert week["served_after_bad_labels"] == week["served_before_bad_data"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])
def test_ingest_stopped_midway_leaves_no_span_and_the_next_ingest_writes_it_whole(tmp_path, stop):
    images, out = tmp_path / "images", tmp_path / "out"
    synthetic.write_demo_images(images, 150)
    command = [sys.executable, str(ROOT / "pipeline_runner.py"), "ingest", "--data-dir", str(images),
               "--output-dir", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               start_new_session=True, preexec_fn=_ctrl_c_reaches_it)
    def staged():  # the span's hidden staging folder, examples/.span-<id>/
        return next((out / "examples").glob(".span-*"), None) if (out / "examples").is_dir() else None

    deadline = time.time() + 300
    while staged() is None and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    staging = staged()
    assert staging is not None, "ingest finished before it could be stopped: %s" % (process.communicate(),)
    if stop == signal.SIGKILL:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    _, stderr = process.communicate()
    assert not (out / "examples" / "span-1").exists()
    if stop == signal.SIGINT:
        assert code == 130 and "interrupted: `ingest` stopped before it finished" in stderr
        assert "Traceback" not in stderr and not staging.exists()
    else:
        assert code == -signal.SIGKILL

    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    if stop == signal.SIGKILL:
        assert f"removed the staging folder {staging.name} a killed ingest left" in again.stdout
    assert sorted(p.name for p in (out / "examples").iterdir()) == ["span-1", span_report.NUMBERS_FILE]
    report = json.loads((out / "examples" / "span-1" / "ingest_report.json").read_text())
    assert report["files_seen"] == 300 and report["counts"]["accepted"] + report["counts"]["normalized"] == 300
    assert sorted(p.name for p in (out / "examples").iterdir()) == ["span-1", span_report.NUMBERS_FILE]


def test_the_next_run_records_a_version_a_killed_push_left_unrecorded(week):
    from contract import metadata
    from reporting import model_history

    version, model_uri = week["unrecorded"]
    assert version == 3 and model_uri == week["good_summary"]["artifacts"]["Model"]
    line = f"version 3 (model {model_uri}, pushed "
    notes = [note for note in week["all_cats_summary"]["notes"] if note.startswith("serving folder: " + line)]
    assert len(notes) == 1 and notes[0].endswith("but not in ML Metadata: recorded now"), week["all_cats_summary"]
    store = metadata.sqlite_store(week["out"] / "metadata.sqlite")
    versions = {v.version: v for v in model_history.pushed_versions(store)}
    assert sorted(versions) == [1, 2, 3] and versions[3].served
    assert versions[3].model_id == versions[1].model_id
    assert not any(note.startswith("serving folder:") for note in week["bad_labels_summary"]["notes"]), "once"


def test_images_far_larger_than_the_previous_spans_stop_before_training(week):
    result, summary = week["drift"], week["drift_summary"]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert summary["ingest"]["span"] == week["other_tool_span"] + 1
    # the previous span (the other tool's) declares 200x200 images; these are 560 to 640 pixels a side
    assert "[train] image height drift: mean " in summary["error"], summary["error"]
    assert "against 200 px in the previous span" in summary["error"] and "allowed ±50%" in summary["error"]
    states = week["drift_states"]
    assert states[node_ids.ANOMALIES_GATE] == ["FAILED"]
    assert not STOPPED_BEFORE & set(states), f"ran past the gate: {states}"
    assert week["served_after_drift"] == week["served_before_bad_data"]
