"""Bad input and settings: refused or quarantined with a one-line reason, never a traceback.

Commands run in this process through pipeline_runner.main (its return value
is the exit code) unless the fault needs a process of its own: a dropped
capability, a shell as cron runs it.
"""

import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

import config as config_lib
import pipeline_runner
from contract import layout
from ingest import synthetic
from orchestration.root import lease, run_lock
from tests.helpers import CHEAP_BASE, ROOT, cli_in_process, file_size_limited, transform_graph, without_root_powers

pytestmark = pytest.mark.faults


def _cli(capsys, *argv):
    code = pipeline_runner.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# Settings that cannot work -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--fine-tune-from", "100000"], f"invalid fine_tune_from: must be below {config_lib.MOBILENET_V2_BASE_LAYERS}"),
    (["--base-blocks", "17"], "invalid base_blocks: must be an integer in [0, 16], got 17"),
    (["--base-blocks", "4"], "invalid fine_tune_from: must be below 45 (MobileNetV2's base kept up to block_4 has 45 "
                             "layers; phase 2 would unfreeze none), got 100 (no flag set it; set --fine-tune-from)"),
    (["--weights", "/nonexistent.h5"], "--weights /nonexistent.h5: no such file"),
    # wide enough to overflow the rounding of MobileNetV2's channels: refused, not a traceback from the layer counts
    (["--weights", "none", "--alpha", "1e306"], "invalid alpha: must be in (0, 10], got 1e+306"),
    (["--min-eval-examples", "-1"], "invalid min_eval_examples: must be an integer >= 0"),
    (["--cached-views", "-1"], "invalid cached_views: must be an integer >= 0"),
    (["--cache-memory-mb", "-5"], "invalid cache_memory_mb: must be an integer >= 0"),
])
def test_settings_that_cannot_work_are_refused_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "run", "--data-dir", tmp_path / "images", "--output-dir", out, *flags)
    assert code == 2 and message in _one_line(err)
    assert not out.exists()


def test_a_shorter_bases_weights_file_under_more_blocks_is_refused_before_any_work(tmp_path, capsys):
    from trainer import model as model_lib

    classifier = model_lib.build_classifier(config_lib.TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE), 64)
    weights, out = tmp_path / "short.h5", tmp_path / "out"
    model_lib.save_base_weights(classifier, str(weights))
    code, _, err = _cli(capsys, "run", "--data-dir", tmp_path / "images", "--output-dir", out, "--weights", weights,
                        "--alpha",
                        "0.35", "--base-blocks", "3", "--fine-tune-from", "30")
    said = (f"--weights: weights file '{weights}' holds MobileNetV2's base kept up to block_2 (a model trained with "
            "--base-blocks 2): it loads with --base-blocks 2 or fewer, not 3")
    assert code == 2 and said in _one_line(err)
    assert not out.exists()


def test_output_dir_that_is_a_file_is_refused_and_left_alone(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, _, err = _cli(capsys, "run", "--data-dir", tmp_path, "--output-dir", target)
    assert code == 2 and f"--output-dir {target} is a file, not a directory" in _one_line(err)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("argv", [
    ["ingest", "--data-dir", "{data}", "--output-dir", "{root}"],
    ["run", "--data-dir", "{data}", "--output-dir", "{root}"],
    ["models", "--output-dir", "{root}"], ["rollback", "--output-dir", "{root}", "--to", "1"],
    ["monitor", "--output-dir", "{root}"], ["predict", "{data}", "--output-dir", "{root}"],
    ["base-weights", "--output-dir", "{root}", "--out", "{data}/b.h5"],
    ["traffic-sink", "--root", "{root}"], ["models", "--root", "{root}", "--metadata-sqlite", "{data}/m.sqlite"],
])
def test_a_root_whose_name_is_not_utf8_is_refused_in_one_line_by_every_command(tmp_path, capsys, argv):
    """TensorFlow's file functions encode a path as UTF-8: a name that is not (Python keeps its bytes as lone
    surrogates) ended ingest, models, rollback, monitor, predict, base-weights and the traffic sink with a
    UnicodeEncodeError traceback."""
    target = os.fsdecode(os.fsencode(tmp_path) + b"/bad\xffroot")
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main([part.format(data=tmp_path / "data", root=target) for part in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "bad\\xffroot" in err and "is not valid UTF-8" in err and "Traceback" not in err
    assert not os.path.exists(target)


def test_a_rollback_reason_that_is_not_utf8_is_refused_before_anything_is_served(tmp_path, capsys):
    """ML Metadata keeps UTF-8 only: such a reason was refused by the store after the version was published, and
    every later run and rollback failed on the push record it left."""
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main(["rollback", "--output-dir", str(tmp_path), "--to", "1", "--reason",
                              os.fsdecode(b"caf\xe9")])
    assert exit_.value.code == 2 and "argument --reason: caf\\xe9 is not valid UTF-8 text" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value, minimum", [("--demo-images", "0", 1), ("--beam-workers", "-2", 0)])
def test_counts_out_of_range_are_refused_by_the_parser(tmp_path, capsys, flag, value, minimum):
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main(["run", "--demo", "--output-dir", str(tmp_path / "out"), flag, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"argument {flag}: must be an integer >= {minimum}, got {int(value)}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, said", [
    (["ingest", "--data-dir", "gs://b/images", "--output-dir", "r"],
     "gs://b/images is a URI: a local run reads its source on this machine"),
    (["run", "--parquet", "gs://b/cats.parquet", "--output-dir", "r"], "gs://b/cats.parquet is a URI: a local run"),
    (["run", "--data-dir", "file:///srv/images", "--output-dir", "r"],
     "file:///srv/images is a URI: give it as a path (/srv/images)"),
    (["ingest", "--data-dir", "", "--output-dir", "r"], "an empty path: give the folder or file to read"),
    (["ingest", "--data-dir", "FILE://localhost/srv/my%20images", "--output-dir", "r"],
     "FILE://localhost/srv/my%20images is a URI: give it as a path (/srv/my images)"),
    (["ingest", "--data-dir", "file://server/images", "--output-dir", "r"],
     "file://server/images is a URI: a local run reads its source"),
    (["ingest", "--data-dir=~nosuchuser1234/pets", "--output-dir", "r"],
     "~nosuchuser1234/pets: no home folder for ~nosuchuser1234"),
    (["ingest", "--data-dir=~no\x1b[31mone/pets", "--output-dir", "r"],  # an escape sequence shown, not obeyed
     "~no\\x1b[31mone/pets: no home folder for ~no\\x1b[31mone"),
])
def test_a_local_runs_source_given_as_a_uri_or_empty_is_refused_by_the_parser(tmp_path, capsys, monkeypatch, argv,
                                                                              said):
    """As a path, gs://b/images would be looked for as a folder gs:/b/images here, and "" (an unset $DATA) is the
    working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"argument {argv[1].split('=')[0]}: {said}" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["ingest", "run"])
@pytest.mark.parametrize("output", ["pets/out", "pets", "pets/dog/runs"])
def test_an_output_folder_inside_the_data_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command,
                                                                              output):
    """It was taken: the root's own files (its lock, its marker, then its spans) were quarantined as photos, a new span
    made by every run, and a root under dog/ would have had its images ingested as dogs."""
    monkeypatch.chdir(tmp_path)
    synthetic.write_demo_images(tmp_path / "pets", 1)
    before = sorted(tmp_path.rglob("*"))
    code, out, err = _cli(capsys, command, "--data-dir", "pets", "--output-dir", output)
    assert code == 2 and out == ""
    assert _one_line(err) == (f"error: --output-dir {output} is inside --data-dir pets"
                              f"{' (it is that folder)' if output == 'pets' else ''}: ingest would read the "
                              "pipeline's own files there as data; choose an output folder outside it")
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("output", ["pets/out/root", "mnt/out"])
def test_an_output_folder_reached_through_a_link_into_the_data_folder_is_refused(tmp_path, capsys, monkeypatch, output):
    """Its real path lay elsewhere: pets/out a link to another folder, mnt a bind mount (or link) of pets."""
    monkeypatch.chdir(tmp_path)
    synthetic.write_demo_images(tmp_path / "pets", 1)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "pets" / "out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "mnt").mkdir()
    if subprocess.run(["mount", "--bind", "pets", "mnt"], capture_output=True).returncode != 0:
        (tmp_path / "mnt").rmdir()
        (tmp_path / "mnt").symlink_to(tmp_path / "pets", target_is_directory=True)
    try:
        code, _, err = _cli(capsys, "ingest", "--data-dir", "pets", "--output-dir", output)
    finally:
        subprocess.run(["umount", "mnt"], capture_output=True)
    assert code == 2 and _one_line(err).startswith(f"error: --output-dir {output} is inside --data-dir pets")
    assert not (tmp_path / "elsewhere" / "root").exists()


def test_an_output_folder_under_the_home_folder_is_expanded_as_the_data_folder_is(tmp_path, capsys, monkeypatch):
    """--output-dir=~/... (no shell expands a ~ after an =) was a folder named ~ in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    synthetic.write_demo_images(tmp_path / "pets", 1)
    code, _, err = _cli(capsys, "ingest", "--data-dir=~/pets", "--output-dir=~/pets/out")
    assert code == 2 and _one_line(err).startswith(f"error: --output-dir {tmp_path}/pets/out is inside --data-dir")
    assert not (tmp_path / "~").exists()


def test_a_schedule_whose_runs_would_be_refused_so_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    synthetic.write_demo_images(tmp_path / "pets", 1)
    code, out, err = _cli(capsys, "schedule", "--local", "--cron", "0 3 * * *", "--data-dir", "pets", "--output-dir",
                          "pets/dog/runs")
    assert code == 2 and out == "" and _one_line(err).startswith("error: --output-dir pets/dog/runs is inside "
                                                                 "--data-dir ")


@pytest.mark.parametrize("flag, argv", [
    ("--package", ["compile", "--image", "i:1", "--root", "gs://b/c", "--package", "gs://b/p.yaml"]),
    ("--package", ["compile", "--target", "vertex", "--image", "i:1", "--root", "gs://b/c", "--package",
                   "gs://b/p.yaml"]),
    ("--monitor-package", ["compile", "--image", "i:1", "--root", "gs://b/c", "--package", "p.yaml",
                           "--monitor-package", "gs://b/m.yaml"]),
    ("--output-dir", ["run", "--demo", "--output-dir", "gs://b/c"]),
    ("--output-dir", ["models", "--output-dir", "gs://b/c"]),
    ("--sheet", ["predict", "cat.jpg", "--sheet", "gs://b/sheet.png"]),
    ("--out", ["base-weights", "--out", "gs://b/base.h5"]),
])
def test_an_output_path_that_is_a_uri_is_refused_by_the_parser_and_writes_no_local_folder(
        tmp_path, capsys, monkeypatch, flag, argv):
    """As a local path, gs://b/p.yaml names a folder gs: here: these flags write on this machine only."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    uri = argv[argv.index(flag) + 1]
    assert f"argument {flag}: {uri} is a URI: this flag writes on this machine; give a local path" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("given, said", [
    ("http://example.com/cat.jpg", "http://example.com/cat.jpg is a URL: predict reads files on this machine; "
                                   "download it first (or ask a model server with --url)"),
    ("gs://bucket/cat.jpg", "gs://bucket/cat.jpg is a URL"), ("file:///tmp/cat.jpg", "file:///tmp/cat.jpg is a URL"),
    ("-", "- (standard input) is not read: give image files or folders"),
])
def test_predict_names_a_url_or_standard_input_as_given_and_refuses_it(tmp_path, capsys, given, said):
    """As a path, http://host/cat.jpg read as http:/host/cat.jpg, reported as a file that is not there."""
    with pytest.raises(SystemExit) as exit_:
        pipeline_runner.main(["predict", "cat.jpg", given, "--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument paths: {said}" in err and "Traceback" not in err


# Two runs at once ---------------------------------------------------------------------------------------------

def test_second_run_exits_3_without_touching_the_store_while_locked(tmp_path):
    with run_lock.exclusive_run(tmp_path):
        result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "run", "--demo",
                                 "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "another run of this pipeline is in progress" in result.stderr
    assert not (tmp_path / "metadata.sqlite").exists() and not (tmp_path / "demo_images").exists()



# Damaged metadata store and ingest report --------------------------------------------------------------------

def _sound_store(tmp_path):
    """(an output dir, its metadata.sqlite): a real ML Metadata store with one type in it."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    out = tmp_path / "out"
    out.mkdir()
    path = out / "metadata.sqlite"
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    metadata_store.MetadataStore(config).put_context_type(metadata_store_pb2.ContextType(name="pipeline"))
    return out, path


@pytest.fixture
def damaged_store(tmp_path):
    out, path = _sound_store(tmp_path)
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xa5" * 4096  # one page of MLMD's tables overwritten, as a bad disk block would
    path.write_bytes(bytes(data))
    return out, path


@pytest.mark.parametrize("command", ["run", "models"])
def test_damaged_metadata_store_is_named_with_the_way_out(damaged_store, tmp_path, capsys, command):
    out, path = damaged_store
    before = path.read_bytes()
    synthetic.write_demo_images(tmp_path / "images", 2)
    source = ["--data-dir", tmp_path / "images"] if command == "run" else []
    code, _, err = _cli(capsys, command, *source, "--output-dir", out)
    line = _one_line(err)
    assert code == 2
    assert f"the ML Metadata store {path} is damaged (database disk image is malformed)" in line
    assert f"mv {path} {path}.damaged" in line and "served versions in serving_model/ and the spans" in line
    assert path.read_bytes() == before and not (out / "examples").exists()


@pytest.mark.parametrize("command", ["run", "models", "rollback"])
def test_a_store_another_process_has_locked_is_busy_not_damaged(tmp_path, capsys, monkeypatch, command):
    """A sqlite3 shell left in a write transaction, a backup tool: the store is locked, not damaged, and moving
    it aside (the advice for a damaged one) would throw away the cache and the history."""
    import sqlite3

    from orchestration.root import store_health

    monkeypatch.setattr(store_health, "BUSY_TIMEOUT_SECONDS", 1.0)  # what is checked is the outcome, not the wait
    out, path = _sound_store(tmp_path)
    before = path.read_bytes()
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        synthetic.write_demo_images(tmp_path / "images", 2)
        extra = {"run": ["--data-dir", tmp_path / "images"], "models": [], "rollback": ["--to", "1"]}[command]
        code, _, err = _cli(capsys, command, *extra, "--output-dir", out)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    line = _one_line(err)
    assert code == 3, line
    assert f"the ML Metadata store {path} is busy: another process has it locked (database is locked" in line
    assert "not damaged" in line and "damaged (" not in line and "mv " not in line
    assert path.read_bytes() == before and not (out / "examples").exists()
    assert not (out / lease.LEASE_FILE).exists(), "the lease was released"


def test_a_command_whose_root_was_taken_over_while_it_ran_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    """Another run takes the root over (as a run on another machine does when it judges this lease stale): the
    heartbeat finds out, and the command ends with one line and exit 1, not a traceback."""
    import threading
    import time

    monkeypatch.setattr(lease, "HEARTBEAT_SECONDS", 0.05)
    synthetic.write_demo_images(tmp_path / "images", 6)
    out = tmp_path / "out"
    path = out / lease.LEASE_FILE
    taken = threading.Event()

    def take_over():
        deadline = time.time() + 120
        while not path.exists() and time.time() < deadline:
            time.sleep(0.005)
        other = lease.Lease(run_id="other-run", host="elsewhere", since=time.time(), heartbeat=time.time())
        (out / "lease.tmp").write_text(other.to_text())
        os.replace(out / "lease.tmp", path)
        taken.set()

    thief = threading.Thread(target=take_over, daemon=True)
    thief.start()
    code, _, err = _cli(capsys, "ingest", "--data-dir", tmp_path / "images", "--output-dir", out)
    thief.join(timeout=5)
    assert taken.is_set()
    line = _one_line(err)
    assert code == 1, line
    assert f"lost the pipeline root {out} to run other-run" in line and "while `ingest` ran" in line
    assert lease.read(out).run_id == "other-run", "the other run's lease is left alone"


def test_ingest_onto_a_full_disk_is_one_line_and_leaves_the_spans_as_they_were(tmp_path, capsys):
    """A file size limit makes the span's writes fail as a full disk does (EFBIG), for any user and in Beam's
    worker too; the earlier span stays whole and no staging folder is left."""
    out = tmp_path / "out"
    synthetic.write_demo_images(tmp_path / "first", 2)
    assert _cli(capsys, "ingest", "--data-dir", tmp_path / "first", "--output-dir", out)[0] == 0
    span_1 = sorted(p.relative_to(out) for p in (out / "examples").rglob("*"))
    synthetic.write_demo_images(tmp_path / "more", 40)
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
              "import pipeline_runner\n"
              f"sys.exit(pipeline_runner.main(['ingest', '--data-dir', {str(tmp_path / 'more')!r}, '--output-dir', "
              f"{str(out)!r}]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=file_size_limited({**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                                   "PYTHONWARNINGS": "ignore"}))
    line = _one_line(result.stderr)
    assert result.returncode == 1, line
    assert line == (f"error: cannot write the new span under {out / 'examples'}: [Errno 27] File too large; nothing "
                    "was ingested (its staging folder is removed, the spans before it are as they were)")
    assert sorted(p.relative_to(out) for p in (out / "examples").rglob("*")) == span_1


def test_damaged_ingest_report_is_named(tmp_path, capsys):
    synthetic.write_demo_images(tmp_path / "images", 2)
    span = tmp_path / "out" / "examples" / "span-1"
    span.mkdir(parents=True)
    (span / "ingest_report.json").write_text('{"source": "folder:/x", "span"')
    code, _, err = _cli(capsys, "ingest", "--data-dir", tmp_path / "images", "--output-dir", tmp_path / "out")
    assert code == 2
    assert f"{span / 'ingest_report.json'} is damaged (not valid JSON" in _one_line(err)
    assert sorted(p.name for p in span.parent.iterdir()) == ["span-1"]


# Unreadable and odd entries in a data folder -----------------------------------------------------------------

def test_unreadable_files_folders_and_links_are_quarantined_with_reasons(tmp_path):
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    synthetic.write_demo_images(elsewhere, 3)
    (images / "cat").mkdir(parents=True)
    for path in (elsewhere / "cat").iterdir():
        path.rename(images / "cat" / path.name)
    (images / "dog").symlink_to(elsewhere / "dog", target_is_directory=True)  # a class folder that is a link
    locked = images / "cat" / "locked.jpg"
    locked.write_bytes(synthetic.render_image("cat", 99))
    private = images / "cat" / "private"
    private.mkdir()
    (private / "hidden.jpg").write_bytes(synthetic.render_image("cat", 98))
    (images / "cat" / "loop").symlink_to(images, target_is_directory=True)
    (images / "cat" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    locked.chmod(0)
    private.chmod(0)
    try:
        result = subprocess.run([*without_root_powers(), sys.executable, str(ROOT / "pipeline_runner.py"), "ingest",
                                 "--data-dir", str(images), "--output-dir", str(tmp_path / "out")],
                                capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        private.chmod(stat.S_IRWXU)
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "out" / "examples" / "span-1" / "ingest_report.json").read_text())
    reasons = {q["file"]: q["reason"] for q in report["quarantined"]}
    assert reasons["cat/locked.jpg"] == "cannot be read (Permission denied)"
    assert reasons["cat/private/"].startswith("folder cannot be read (Permission denied)")
    assert reasons["cat/loop/"].startswith("symbolic link loop: leads back to a folder above it")
    assert reasons["cat/gone.jpg"] == f"broken symbolic link to {tmp_path / 'nowhere.jpg'}"
    assert report["examples_per_label"] == {"cat": 3, "dog": 3}  # the linked class folder was followed
    assert report["files_seen"] == 6 + len(reasons) and report["counts"]["quarantined"] == len(reasons) == 4
    for name in reasons:
        assert f"quarantined {name}: " in result.stdout


def test_eval_split_too_small_to_judge_a_model_stops_at_the_data_gate():
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from components import anomalies_gate

    splits = {"train": statistics_pb2.DatasetFeatureStatistics(num_examples=6),
              "eval": statistics_pb2.DatasetFeatureStatistics(num_examples=4)}
    problems = anomalies_gate.eval_size_problems(splits, 30)
    assert problems == ["[eval] only 4 examples: at least 30 are needed to judge a model (on fewer a model is "
                        "blessed or rejected by chance; add data, or lower --min-eval-examples)"]
    assert anomalies_gate.eval_size_problems(splits, 4) == []
    assert anomalies_gate.eval_size_problems({"train": splits["train"]}, 1)[0].startswith("[eval] only 0 examples")
    # with a test split, the split the Evaluator scores is the one that must be large enough
    three = {**splits, "test": statistics_pb2.DatasetFeatureStatistics(num_examples=40)}
    assert anomalies_gate.eval_size_problems(three, 30) == []
    assert anomalies_gate.eval_size_problems(three, 41)[0].startswith("[test] only 40 examples")
    with pytest.raises(anomalies_gate.DataAnomaliesError, match="only 4 examples"):
        anomalies_gate.check_anomalies({}, extra_problems=problems)
    assert config_lib.PipelineConfig().data.min_eval_examples == 30


# The cron line on a fresh output folder ----------------------------------------------------------------------

def test_printed_cron_line_runs_in_a_fresh_output_folder(tmp_path):
    (tmp_path / "images").mkdir()
    out = tmp_path / "new" / "out"
    printed = cli_in_process("schedule", "--local", "--cron", "0 3 * * *", "--data-dir", tmp_path / "images",
                             "--output-dir", out)
    assert printed.returncode == 0, printed.stderr
    command = printed.stdout.strip().split(" ", 5)[5]  # what cron hands to sh after the 5 time fields
    # cron's environment: no virtualenv, a minimal PATH, some other working directory
    ran = subprocess.run(["sh", "-c", command], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=300, cwd="/")
    log = out / "scheduled_runs.log"
    # the night's exit code said on stderr, which cron mails; its output in the log
    assert ran.stderr.startswith(f"cats-vs-dogs-tfx: the scheduled run exited 2; its output is in {log}\nerror: no "
                                 "usable images in folder source"), ran.stderr
    assert ran.returncode == 0 and "error: no usable images in folder source" in log.read_text()
    assert shlex.split(command)[2] == str(out)
    # each night's output opens with a line of its own: the command and when it started
    first, second = log.read_text().splitlines()[:2]
    assert re.fullmatch(r"=== run \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4} ===", first), first
    assert second.startswith("error: no usable images"), second


# predict's exit codes ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, demo_jpegs):
    from trainer import export
    from trainer import model as model_lib

    folder = tmp_path_factory.mktemp("model")
    config = config_lib.TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE, seed=1)
    classifier = model_lib.get_classifier(model_lib.build_model(config, 64))
    export.export_serving_model(classifier, transform_graph(folder, demo_jpegs, 64), str(folder / "serving" / "1"))
    return folder / "serving" / "1"


@pytest.fixture
def photos(tmp_path, demo_jpegs):
    (tmp_path / "photos").mkdir()
    for index, jpeg in enumerate(demo_jpegs["dog"][:2]):
        (tmp_path / "photos" / f"dog{index}.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_predict_exits_0_when_every_file_is_classified(model_dir, photos, capsys):
    code, out, err = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", photos / "s.png")
    assert code == 0 and err == "" and "UNREADABLE" not in out
    assert (photos / "s.png").exists() and f"contact sheet: {photos / 's.png'}\n" in out
    code, out, _ = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", photos / "s.png")
    assert code == 0
    assert f"contact sheet: {photos / 's.png'} (replacing the earlier one; --sheet PATH keeps both)" in out


@pytest.mark.parametrize("target", ["a photo", "an input photo", "a note", "a link to a photo", "a folder",
                                    "an empty file"])
def test_sheet_never_writes_over_a_file_it_did_not_write_and_nothing_is_classified(model_dir, photos, capsys,
                                                                                   target):
    photo = photos / "photos" / "dog1.jpg"
    path = {"a photo": photos / "mine.jpg", "an input photo": photo, "a note": photos / "notes.png",
            "a link to a photo": photos / "link.png", "a folder": photos / "folder.png",
            "an empty file": photos / "empty.jpg"}[target]
    if target == "a photo":
        shutil.copy(photo, path)
    elif target == "a note":
        path.write_text("notes")
    elif target == "a link to a photo":
        path.symlink_to(photo)
    elif target == "a folder":
        path.mkdir()
    elif target == "an empty file":
        path.write_bytes(b"")
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    code, out, err = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", path)
    assert code == 2 and out == "" and _one_line(err) == (
        f"error: the contact sheet's path {path} holds a file predict did not write (not one of its contact "
        "sheets): it is left as it is; give another --sheet PATH, or move that file first")
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before


def test_the_default_sheet_path_is_kept_as_safe_and_a_file_put_there_meanwhile_is_left(model_dir, photos, capsys,
                                                                                        monkeypatch):
    from inference import predict

    monkeypatch.chdir(photos)  # a model outside any root: its default sheet is ./predictions/contact_sheet.png
    default = photos / "predictions" / "contact_sheet.png"
    default.parent.mkdir()
    default.write_bytes((photos / "photos" / "dog0.jpg").read_bytes())  # a file of the user's
    code, out, err = _cli(capsys, "predict", photos / "photos", "--model", model_dir)
    assert code == 2 and out == "" and f"the contact sheet's path {default} holds a file" in err
    default.unlink()
    classify = predict.predict_files

    def meanwhile(*args, **kwargs):  # another program writes the sheet's path while the photos are classified
        answer = classify(*args, **kwargs)
        default.write_text("notes")
        return answer

    monkeypatch.setattr(predict, "predict_files", meanwhile)
    code, out, err = _cli(capsys, "predict", photos / "photos", "--model", model_dir)
    assert code == 1 and "dog0.jpg" in out and default.read_text() == "notes", (out, err)
    assert _one_line(err).startswith(f"error: the contact sheet's path {default} holds a file ")


@pytest.mark.parametrize("name", ["s.png", "s.jpg"])
def test_sheet_replaces_a_contact_sheet_predict_wrote_as_png_or_jpeg(model_dir, photos, capsys, name):
    for replaced in (False, True):
        code, out, _ = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", photos / name,
                            "--json")
        assert code == 0 and json.loads(out)["sheet_replaced"] is replaced


def test_predict_exits_1_when_some_files_cannot_be_read(model_dir, photos, capsys):
    code, out, err = _cli(capsys, "predict", photos / "photos", photos / "notes.txt", photos / "missing.jpg",
                          "--model", model_dir, "--sheet", photos / "s.png", "--json")
    assert code == 1
    assert _one_line(err) == "warning: 2 of 4 files could not be classified (marked UNREADABLE)"
    assert json.loads(out)["sheet_replaced"] is False and json.loads(out)["passed_over"] == []
    errors = {p["path"]: p["error"] for p in json.loads(out)["predictions"]}
    assert errors[str(photos / "missing.jpg")] == "cannot be read: No such file or directory"
    assert errors[str(photos / "notes.txt")] and sum(e is None for e in errors.values()) == 2


def test_predict_says_where_a_broken_link_leads_and_that_a_link_loops_as_ingest_does(model_dir, photos, capsys):
    (photos / "photos" / "gone.jpg").symlink_to(photos / "nowhere.jpg")
    (photos / "photos" / "loop.jpg").symlink_to(photos / "photos" / "loop.jpg")
    code, out, _ = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", photos / "s.png",
                        "--json")
    errors = {p["path"]: p["error"] for p in json.loads(out)["predictions"]}
    assert code == 1 and errors[str(photos / "photos" / "gone.jpg")] == (
        f"cannot be read: broken symbolic link to {photos / 'nowhere.jpg'}")
    assert errors[str(photos / "photos" / "loop.jpg")] == (
        f"cannot be read: a symbolic link in a loop ({photos / 'photos' / 'loop.jpg'})")


def test_predict_shows_a_name_that_is_not_utf8_or_holds_an_escape_escaped_in_its_json_and_its_errors(
        model_dir, photos, capsys):
    """--json wrote such a name as a lone surrogate ("\\udce9"), which strict JSON readers refuse, and the error for
    a folder with nothing to classify sent its name's escape sequence to the terminal."""
    odd = photos / "photos" / os.fsdecode(b"caf\xe9.jpg")
    odd.write_bytes((photos / "photos" / "dog0.jpg").read_bytes())
    code, out, _ = _cli(capsys, "predict", odd, "--model", model_dir, "--sheet", photos / "s.png", "--json")
    assert code == 0 and "\\udc" not in out
    assert [p["path"] for p in json.loads(out)["predictions"]] == [str(photos / "photos" / "caf\\xe9.jpg")]
    empty = photos / "\x1b[31mred"
    empty.mkdir()
    code, _, err = _cli(capsys, "predict", empty, "--model", model_dir, "--sheet", photos / "s.png")
    assert code == 2 and _one_line(err) == f"error: no files found in {photos}/\\x1b[31mred"


def test_predict_exits_2_when_nothing_could_be_classified(model_dir, photos, capsys):
    code, out, err = _cli(capsys, "predict", photos / "notes.txt", "--model", model_dir, "--sheet", photos / "s.png")
    assert code == 2 and _one_line(err) == "error: none of the 1 files could be classified (reasons above)"
    assert "UNREADABLE" in out and not (photos / "s.png").exists()


def test_predict_on_a_folder_of_only_an_operating_systems_files_says_so(model_dir, photos, capsys):
    (photos / "mac").mkdir()
    (photos / "mac" / ".DS_Store").write_bytes(b"Bud1")
    (photos / "mac" / "._dog0.jpg").write_bytes(b"\x00\x05\x16\x07")
    code, _, err = _cli(capsys, "predict", photos / "mac", "--model", model_dir, "--sheet", photos / "s.png")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"error: no files found in {photos / 'mac'}: only files and folders the " \
        "operating system keeps"


def test_predict_passes_over_a_pipeline_root_inside_the_folder_it_is_given(model_dir, photos, capsys):
    """`predict ~ --record` read the root under the home folder: its plots, pages, sheets and queues were recorded as
    traffic, and the next drift check queued them for people to sort into cats and dogs."""
    root = photos / "photos" / "runs"
    (root / "report").mkdir(parents=True)
    (root / layout.ROOT_MARKER).write_text("{}")
    shutil.copy(photos / "photos" / "dog0.jpg", root / "report" / "plot.jpg")
    code, out, err = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", photos / "s.png",
                          "--json")
    assert code == 0 and err == f"note: passed over {root}: a pipeline's root (its models, reports and queues), " \
                                "not photos; name a folder inside it to classify what it holds\n"
    assert [p["path"] for p in json.loads(out)["predictions"]] == [str(photos / "photos" / f"dog{i}.jpg")
                                                                  for i in (0, 1)]
    code, _, err = _cli(capsys, "predict", root, "--model", model_dir, "--sheet", photos / "s.png")
    assert code == 2 and err.splitlines()[-1] == f"error: no files found in {root}: only a pipeline's root"


@pytest.mark.parametrize("where, message", [("missing", "no model folder at"),
                                            ("empty", "holds no SavedModel (saved_model.pb)")])
def test_predict_with_an_unusable_model_folder_is_a_one_line_error(photos, capsys, where, message):
    (photos / "empty").mkdir()
    code, _, err = _cli(capsys, "predict", photos / "photos", "--model", photos / where)
    assert code == 2 and message in _one_line(err) and str(photos / where) in err


# Spans written by another tool -------------------------------------------------------------------------------

def _example(image: bytes, label: int) -> bytes:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})).SerializeToString()


def test_foreign_span_with_png_bytes_or_a_truncated_file_stops_before_any_component(tmp_path, capsys, demo_jpegs):
    import tensorflow as tf
    from PIL import Image

    buffer = io.BytesIO()  # a real image, stored as PNG by the other tool
    Image.open(io.BytesIO(demo_jpegs["cat"][0])).save(buffer, format="PNG")
    span = tmp_path / "out" / "examples" / "span-1"
    (span / "train").mkdir(parents=True)
    (span / "eval").mkdir()
    # Put into a root: a folder holding nothing but another tool's span is no evidence of a run
    # (orchestration.root.marker)
    (tmp_path / "out" / layout.ROOT_MARKER).write_text("{}\n")
    large = io.BytesIO()  # 400x300 = 120,000 pixels, above the --max-image-pixels given below
    Image.new("RGB", (400, 300), (120, 90, 60)).save(large, format="JPEG")
    with tf.io.TFRecordWriter(str(span / "train" / "part-0.tfrecord")) as writer:
        writer.write(_example(demo_jpegs["cat"][1], 0))
        writer.write(_example(buffer.getvalue(), 0))
        writer.write(_example(demo_jpegs["dog"][0], 1))
        writer.write(_example(large.getvalue(), 1))
    with tf.io.TFRecordWriter(str(span / "eval" / "part-0.tfrecord")) as writer:
        for label, name in enumerate(("cat", "dog")):
            writer.write(_example(demo_jpegs[name][2], label))
    whole = (span / "eval" / "part-0.tfrecord").read_bytes()
    (span / "eval" / "part-0.tfrecord").write_bytes(whole[:-40])  # a copy that stopped short

    code, _, err = _cli(capsys, "run", "--output-dir", tmp_path / "out", "--min-eval-examples", "1",
                        "--max-image-pixels", "100000")
    assert code == 2 and "Traceback" not in err
    assert "error: the data gate stopped the run before ImportExampleGen: 3 problems" in err
    assert ("span-1/train/part-0.tfrecord record 3: feature 'image' is a 400x300 JPEG: more than the limit of "
            "100000 pixels (--max-image-pixels)") in err
    assert ("span-1/train/part-0.tfrecord record 1: feature 'image' is not JPEG data (starts with 89 50 4e 47)"
            in err)
    assert "span-1/eval/part-0.tfrecord record 1: not a readable TFRecord (truncated or corrupt" in err
    assert "{{function_node" not in err and "[Op:" not in err, "TensorFlow's op plumbing is no part of the reason"
    assert not (tmp_path / "out" / "metadata.sqlite").exists() and not (tmp_path / "out" / "pipeline_root").exists()



def test_foreign_span_holding_a_folder_a_fifo_or_odd_names_stops_the_run_naming_each(tmp_path, capsys, demo_jpegs):
    """ImportExampleGen reads every entry of a split folder as a file: a folder there was a storage fault's line in
    TensorFlow's words, a FIFO made the run wait for a writer forever, a name that is not UTF-8 was a traceback,
    and a newline in a name forged a line of the refusal."""
    import tensorflow as tf

    span = tmp_path / "out" / "examples" / "span-1"
    (span / "train" / "more").mkdir(parents=True)
    for split in ("eval", "test"):
        (span / split).mkdir()
    (tmp_path / "out" / layout.ROOT_MARKER).write_text("{}\n")
    for split in ("train", "eval"):
        with tf.io.TFRecordWriter(str(span / split / "part-0.tfrecord")) as writer:
            writer.write(_example(demo_jpegs["cat"][0], 0))
            writer.write(_example(demo_jpegs["dog"][0], 1))
    os.mkfifo(span / "eval" / "pipe.tfrecord")
    (span / "train" / "x\nerror: nothing wrong").mkdir()
    with open(os.path.join(os.fsencode(span / "test"), b"part-\xff.tfrecord"), "wb"):
        pass

    code, _, err = _cli(capsys, "run", "--output-dir", tmp_path / "out", "--min-eval-examples", "1")
    assert code == 2 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if not line.startswith("  ")] == [
        "error: the data gate stopped the run before ImportExampleGen: 4 problems in spans written without an "
        "ingest report (fix or remove them, or ingest the images with `ingest`):"], err
    assert "span-1/train/more: a folder where the split's TFRecord files are expected" in err
    assert "span-1/train/x\\nerror: nothing wrong: a folder where the split's TFRecord files are expected" in err
    assert "span-1/eval/pipe.tfrecord: not a regular file (a pipe, socket or device)" in err
    assert "span-1/test: holds a file whose name is not UTF-8 text" in err
    assert not (tmp_path / "out" / "metadata.sqlite").exists() and not (tmp_path / "out" / "pipeline_root").exists()


def test_a_foreign_tfrecord_whose_framing_does_not_fit_its_size_stops_the_run_naming_the_record(tmp_path, capsys,
                                                                                                demo_jpegs):
    """Read from the records' headers before TensorFlow reads a record (ingest.framing): a 15-byte file whose header
    (its length's checksum valid) claims a terabyte, plain or gzip-compressed, killed the run with exit 139 and no
    word (TensorFlow's reader allocates what a header claims); 7 stray bytes after the last record passed the gate
    (TensorFlow's reader takes them for the end of the file) and ImportExampleGen then failed without naming the
    file; records after an empty gzip member were never checked (TensorFlow's reader stops there, Beam's reads on:
    PNG images reached ImportExampleGen); a plain file named .GZ passed the gate and failed ImportExampleGen,
    which chooses the compression by the suffix in any case."""
    import gzip
    import struct

    import tensorflow as tf
    from PIL import Image

    from traffic.tfrecord import masked_crc, tfrecord_bytes

    span = tmp_path / "out" / "examples" / "span-1"
    for split in ("train", "eval", "test"):
        (span / split).mkdir(parents=True)
        with tf.io.TFRecordWriter(str(span / split / "part-0.tfrecord")) as writer:
            writer.write(_example(demo_jpegs["cat"][0], 0))
            writer.write(_example(demo_jpegs["dog"][0], 1))
    (tmp_path / "out" / layout.ROOT_MARKER).write_text("{}\n")
    plain = (span / "train" / "part-0.tfrecord").read_bytes()
    with open(span / "train" / "part-0.tfrecord", "ab") as f:
        f.write(b"\x00" * 7)

    def claiming(length):
        header = struct.pack("<Q", length)
        return header + masked_crc(header) + b"abc"

    (span / "eval" / "huge.tfrecord").write_bytes(claiming(10**12))
    (span / "eval" / "short.tfrecord").write_bytes(claiming(10**6))
    (span / "test" / "huge.gz").write_bytes(gzip.compress(claiming(10**12)))
    buffer = io.BytesIO()  # a real image, stored as PNG
    Image.open(io.BytesIO(demo_jpegs["cat"][1])).save(buffer, format="PNG")
    png = tfrecord_bytes([_example(buffer.getvalue(), 0)])
    (span / "test" / "hidden.gz").write_bytes(gzip.compress(plain) + gzip.compress(b"") + gzip.compress(png))
    (span / "test" / "plain.GZ").write_bytes(plain)
    (span / "test" / "other.bz2").write_bytes(plain)

    code, _, err = _cli(capsys, "run", "--output-dir", tmp_path / "out", "--min-eval-examples", "1")
    assert code == 2 and "Traceback" not in err, err
    assert "error: the data gate stopped the run before ImportExampleGen: 7 problems" in err
    unreadable = "not a readable TFRecord (truncated or corrupt: "
    for line in [
        f"span-1/train/part-0.tfrecord record 2: {unreadable}7 stray bytes at the end of the file, fewer than a "
        "record's 12-byte header)",
        "span-1/eval/huge.tfrecord record 0: its header claims 1,000,000,000,000 bytes, above the limit of "
        "269,484,032 for one example (--max-file-mb)",
        f"span-1/eval/short.tfrecord record 0: {unreadable}its header claims 1,000,000 bytes, past the end of the file "
        "at 15)",
        "span-1/test/huge.gz record 0: its header claims 1,000,000,000,000 bytes, above the limit",
        "span-1/test/hidden.gz record 2: TensorFlow's reader stops there, before the file's 1 further record (an "
        "empty gzip member ends its reading): write the file again as one gzip member",
        "span-1/test/plain.GZ record 0: not a readable TFRecord (truncated or corrupt: the gzip data cannot be read: "
        "Error -3 while decompressing data: incorrect header check)",
        "span-1/test/other.bz2: compressed by its name (.bz2), which the data gate cannot read: write the span's "
        "files plain or gzip-compressed (.gz)",
    ]:
        assert line in err, (line, err)
    assert not (tmp_path / "out" / "metadata.sqlite").exists() and not (tmp_path / "out" / "pipeline_root").exists()


def test_base_weights_replaces_only_a_file_it_wrote(tmp_path, capsys):
    """`--out notes.h5` wrote over the user's file, and over a downloaded ImageNet file the same way."""
    import h5py

    from config import TrainingConfig
    from trainer import model as model_lib

    for mine, content in (("notes.h5", None), ("imagenet_no_top.h5", "h5")):
        path = tmp_path / mine
        if content:
            with h5py.File(path, "w") as f:  # Keras' own layout, without the mark
                f.attrs["layer_names"] = [b"Conv1"]
        else:
            path.write_text("my precious notes")
        before = path.read_bytes()
        code, out, err = _cli(capsys, "base-weights", "--model", tmp_path / "no-model", "--out", path)
        assert (code, out) == (2, "") and path.read_bytes() == before
        assert _one_line(err) == f"error: --out {path} is a file base-weights did not write (an ImageNet file, a " \
                                 "file of yours): it is left as it is; give another path"
    written = tmp_path / "base.h5"
    model_lib.save_base_weights(model_lib.build_model(TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE), 32),
                                str(written))
    assert model_lib.written_by_base_weights(str(written)), "a file it wrote is one it may replace"
    assert not model_lib.written_by_base_weights(str(tmp_path / "notes.h5"))


def test_a_link_or_a_path_named_twice_is_classified_once_and_said(model_dir, photos, capsys):
    folder = photos / "photos"
    (folder / "again.jpg").hardlink_to(folder / "dog0.jpg")
    (folder / "link.jpg").symlink_to("dog1.jpg")
    code, out, err = _cli(capsys, "predict", folder, folder / "dog1.jpg", "--model", model_dir, "--sheet",
                          photos / "s.png", "--json")
    answer = json.loads(out)
    assert code == 0 and [p["path"] for p in answer["predictions"]] == [str(folder / "again.jpg"),
                                                                       str(folder / "dog1.jpg")]
    assert answer["same_file"] == [[str(folder / "dog0.jpg"), str(folder / "again.jpg")],
                                   [str(folder / "link.jpg"), str(folder / "dog1.jpg")]], "a path named twice: once"
    assert _one_line(err) == (
        f"note: 2 paths named a file found already (a link, or another spelling of its path), classified once: "
        f"{folder / 'dog0.jpg'} as {folder / 'again.jpg'}, {folder / 'link.jpg'} as {folder / 'dog1.jpg'}")


def test_a_failed_recording_and_a_failed_sheet_are_both_said(model_dir, photos, capsys, request):
    from components import serving_pusher

    root = photos / "root"
    serving_pusher.push_model(str(model_dir), str(root / "serving_model"))
    if os.geteuid() != 0:
        pytest.skip("a full disk under traffic/ needs a tmpfs mount (root)")
    (root / "traffic").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(root / "traffic")], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", str(root / "traffic")], check=True))
    (photos / "taken").write_text("a file where the sheet's folder goes")
    code, out, err = _cli(capsys, "predict", photos / "photos", photos / "notes.txt", "--output-dir", root,
                          "--record", "--sheet", photos / "taken" / "s.png", "--json")
    answer, lines = json.loads(out), err.strip().splitlines()
    assert answer["record_error"].startswith("recording the images as traffic failed: ") and answer["sheet_error"]
    assert code == 1 and "dog0.jpg" in out and "Traceback" not in err, err
    assert lines[-2] == "warning: 1 of 3 files could not be classified (marked UNREADABLE)", lines
    assert lines[-1].startswith("error: recording the images as traffic failed: "), lines
    assert f"; and the contact sheet could not be written to {photos / 'taken' / 's.png'}: " in lines[-1], lines
    assert lines[-1].endswith(" (the classifications are above)"), lines


def test_a_sheet_a_full_disk_cut_short_leaves_the_earlier_one_and_the_next_predict_replaces_it(model_dir, photos,
                                                                                                capsys, request):
    if os.geteuid() != 0:
        pytest.skip("a full disk under the sheet needs a tmpfs mount (root)")
    folder = photos / "sheets"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    request.addfinalizer(lambda: subprocess.run(["umount", str(folder)], check=True))
    sheet = folder / "s.png"
    assert _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", sheet)[0] == 0
    earlier = sheet.read_bytes()
    more = photos / "more"  # a larger sheet: writing over the earlier one in place would free too little for it
    more.mkdir()
    for index in range(6):
        shutil.copy(photos / "photos" / f"dog{index % 2}.jpg", more / f"{index}.jpg")
        (more / f"{index}.jpg").write_bytes((more / f"{index}.jpg").read_bytes() + bytes([index]))
    filler = folder / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(folder).free - 4096))  # room for less than a sheet
    code, out, err = _cli(capsys, "predict", more, "--model", model_dir, "--sheet", sheet)
    assert code == 1 and "5.jpg" in out and f"the contact sheet could not be written to {sheet}" in err, err
    assert sheet.read_bytes() == earlier and sorted(os.listdir(folder)) == ["filler", "s.png"], "no cut sheet"
    filler.unlink()
    code, out, err = _cli(capsys, "predict", more, "--model", model_dir, "--sheet", sheet)
    assert code == 0 and "(replacing the earlier one" in out, err


def test_a_sheet_of_a_long_name_is_written_and_a_link_to_a_sheet_is_refused(model_dir, photos, capsys):
    long = photos / f"{'a' * 245}.png"  # a name the file system takes, with no room for a longer temporary one
    assert _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", long)[0] == 0
    link = photos / "link.png"
    link.symlink_to(long)
    before = long.read_bytes()
    code, out, err = _cli(capsys, "predict", photos / "photos", "--model", model_dir, "--sheet", link)
    assert code == 2 and out == "" and f"the contact sheet's path {link} holds a file predict did not write" in err
    assert link.is_symlink() and long.read_bytes() == before
