"""A root's odd contents through the real commands: links out of the root, folder names that are not versions,
and damaged JSON the project wrote. Never a traceback; a link's target is never touched.

The root is what a pipeline leaves for `models`, `rollback` and `predict`: a
real ML Metadata store (SQLite) that knows two blessed models and their pushes
as versions 1 and 2, and a real serving folder published by the ServingPusher's
own code (no training: the models' files are stand-ins).
"""

import contextlib
import faulthandler
import json
import os
import pathlib
import resource
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

import pipeline_runner
from components.serving_pusher import digests_text, existing_versions, push_model
from contract import errors, layout, served
from contract import metadata as metadata_lib
from contract.layout import RunLayout
from ingest import synthetic
from orchestration.run import reconcile
from tests.helpers import ROOT as REPO
from tests.helpers import file_size_limited, servable_model, tree_digest

pytestmark = pytest.mark.faults

PIPELINE = "cats-vs-dogs"


def _cli(capsys, *argv):
    code = pipeline_runner.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _two_versions(root, model_place, blessing_place=None, cards: bool = False) -> None:
    """`root` serving version 2 (model 2) after version 1 (model 1), both recorded in its store: the models made
    in `model_place(number)`, their blessings recorded at `blessing_place(number)` (a folder made there) or beside
    them; `cards`: each version with the model card a push writes."""
    from components import model_card

    root.mkdir()
    store = metadata_lib.open_store(metadata_lib.sqlite_store(RunLayout(root).metadata_path))
    types = {t: store.put_artifact_type(metadata_store_pb2.ArtifactType(name=t))
             for t in ("Model", "ModelBlessing", "PushedModel")}
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline"))
    store.put_contexts([metadata_store_pb2.Context(type_id=context_type, name=PIPELINE)])
    for number in (1, 2):
        model = str(servable_model(model_place(number), f"graph-{number}"))
        [model_id] = store.put_artifacts([metadata_store_pb2.Artifact(type_id=types["Model"], uri=model)])
        blessed = f"{model}-blessing"
        if blessing_place is not None:
            blessed = str(blessing_place(number))
            os.makedirs(blessed)
        blessing = metadata_store_pb2.Artifact(type_id=types["ModelBlessing"], uri=blessed)
        blessing.custom_properties[metadata_lib.BLESSED].int_value = 1
        blessing.custom_properties[metadata_lib.CURRENT_MODEL_ID].int_value = model_id
        store.put_artifacts([blessing])
        card = model_card.render(model_card.CardFacts(
            pipeline=PIPELINE, model_uri=model, training={"alpha": 1.0}, history=None, spans=[], metrics={},
            by_label={}, thresholds=[], decision="met binary_accuracy >= 0", tflite=None, served_as=None))
        pushed = push_model(model, str(RunLayout(root).serving_dir), model_uri=model,
                            extra_files=(lambda version, card=card: {layout.MODEL_CARD_FILE: card}) if cards else None)
        reconcile.record_push(store, PIPELINE, "ServingPusher", model_id, pushed.version, pushed.path, {})


@pytest.fixture
def root(tmp_path):
    """A root serving version 2 (model 2) after version 1 (model 1), both recorded in its store."""
    root = tmp_path / "root"
    _two_versions(root, lambda number: tmp_path / f"model-{number}")
    return root


@pytest.fixture
def users_folder(tmp_path):
    """Somebody's files outside the root, which a link under the root points at."""
    folder = tmp_path / "photos-of-the-year"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"not the pipeline's")
    (folder / "variables" / "variables.index").write_bytes(b"mine")
    (folder / "q3.txt").write_text("the user's report")
    return folder


def test_a_version_that_is_a_link_is_moved_aside_as_a_link_and_its_target_is_untouched(root, users_folder, capsys):
    serving = RunLayout(root).serving_dir
    before = tree_digest(users_folder)
    (serving / "9").symlink_to(users_folder, target_is_directory=True)

    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "served: version 2" in out
    assert f"warning: {serving / '9'} is refused: it is a symbolic link (to {users_folder})" in err

    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 0, err
    assert f"{serving / '9'} was refused: it is a symbolic link (to {users_folder})" in out
    assert "served again as version 10" in out, "the link's number, which a server may have seen, is not reused"
    [moved] = (root / "serving_model.incomplete").iterdir()
    assert moved.is_symlink() and moved.resolve() == users_folder.resolve()
    assert tree_digest(users_folder) == before
    assert existing_versions(str(serving)) == [1, 2, 10]

    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "2")  # every later one works too
    assert code == 0 and "served again as version 11" in out, err
    assert tree_digest(users_folder) == before


def test_a_version_holding_a_link_is_incomplete_and_moved_aside_with_its_link(root, users_folder, capsys):
    serving = RunLayout(root).serving_dir
    before = tree_digest(users_folder)
    version = serving / "3"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"graph")
    (version / "variables").symlink_to(users_folder / "variables", target_is_directory=True)
    (version / "notes.txt").symlink_to(users_folder / "q3.txt")

    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 0, err
    assert f"{version} was refused: it holds a symbolic link (notes.txt -> {users_folder / 'q3.txt'}, " \
           f"variables -> {users_folder / 'variables'})" in out
    [moved] = (root / "serving_model.incomplete").iterdir()
    assert (moved / "variables").is_symlink() and (moved / "notes.txt").is_symlink()
    assert (moved / "saved_model.pb").read_bytes() == b"graph"
    assert tree_digest(users_folder) == before and not version.exists()


def test_a_span_that_is_or_holds_a_link_is_moved_aside_as_it_was_by_the_next_ingest(root, users_folder, capsys,
                                                                                        demo_jpegs):
    examples = RunLayout(root).examples_root
    examples.mkdir()
    before = tree_digest(users_folder)
    (examples / "span-4").symlink_to(users_folder, target_is_directory=True)
    (examples / "span-5" / "train").mkdir(parents=True)
    (examples / "span-5" / "train" / "data.gz").symlink_to(users_folder / "q3.txt")
    images = root.parent / "images"
    for label in ("cat", "dog"):
        (images / label).mkdir(parents=True)
        for index, jpeg in enumerate(demo_jpegs[label][:3]):
            (images / label / f"{index}.jpg").write_bytes(jpeg)

    code, out, err = _cli(capsys, "ingest", "--data-dir", images, "--output-dir", root)
    assert code == 0, err
    assert f"{examples / 'span-4'} was refused: it is a symbolic link" in out
    assert f"{examples / 'span-5'} was refused: it holds a symbolic link (train/data.gz -> " in out
    assert "-> span 6" in out, "the numbers of the spans moved aside are not used again"
    aside = sorted((root / "examples.incomplete").iterdir())
    assert [p.name.split("-")[1] for p in aside] == ["4", "5"]
    assert aside[0].is_symlink() and (aside[1] / "train" / "data.gz").is_symlink()
    assert tree_digest(users_folder) == before


@pytest.mark.parametrize("name", ["²", "٣", "007", "v3", str(2**63 - 1)])
def test_a_folder_whose_name_is_not_a_version_is_ignored_and_named_once(root, capsys, name):
    serving = RunLayout(root).serving_dir
    (serving / name).mkdir()
    (serving / name / "saved_model.pb").write_bytes(b"graph")
    named = f"{serving / name} is not a version (a version's name is a number in ASCII digits, at most 2**62): ignored"

    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "served: version 2" in out and err.count(named) == 1, err

    code, out, err = _cli(capsys, "predict", root / "nothing.jpg", "--output-dir", root)
    assert err.count(named) == 1, err
    assert code == 2 and f"model: {serving / '2'}\n" in out, "version 2 is the newest"

    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 0 and out.count(named) == 1 and "served again as version 3" in out, (out, err)
    assert (serving / name / "saved_model.pb").read_bytes() == b"graph"


@pytest.mark.parametrize("content, reason", [
    ("{\"images\": 4, \"models\": ", "not valid JSON (Expecting value: line 1 column 25 (char 24))"),
    ("[1, 2]", "holds a list where an object belongs"),
    (b"\xff\xfe{}", "not UTF-8 text, so not JSON"),
    ("{\"images\": 4, \"models\": {\"int8\": {\"agreement\": \"high\"}}}",
     "model 'int8' lacks one of the numbers agreement, logit_error_mean, logit_error_rms, logit_error_max, bytes"),
])
def test_a_damaged_fidelity_file_is_named_in_the_list_of_models(root, capsys, content, reason):
    version = RunLayout(root).serving_dir / "2"
    path = version / layout.TFLITE_FIDELITY_FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    # Damaged when it was pushed: its commit record agrees with its files, so the version itself is intact.
    (version / layout.DIGESTS_FILE).write_text(digests_text(str(version)))

    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "served: version 2" in out, err
    assert f"version 2: fidelity unreadable: {path}: {reason}" in out

    code, out, _ = _cli(capsys, "models", "--output-dir", root, "--json")
    versions = {v["version"]: v for v in json.loads(out)}
    assert versions[2]["unreadable"] == [f"fidelity unreadable: {path}: {reason}"] and versions[1]["unreadable"] == []


@pytest.mark.parametrize("content, named", [
    ("{\"model_uri\": ", "push record unreadable: {record}: not valid JSON (Expecting value"),
    ("[\"a list\"]", "push record unreadable: {record}: holds a list where an object belongs"),
    ("{\"model_uri\": 7}", "model 7, pushed at an unknown time"),
])
def test_a_damaged_push_record_of_an_unrecorded_version_is_named(root, capsys, content, named, tmp_path):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "saved_model.pb").write_bytes(b"graph-x")
    assert push_model(str(stranger), str(RunLayout(root).serving_dir), model_uri="gs://elsewhere/model").version == 3
    record = RunLayout(root).serving_dir / "3" / layout.PUSH_RECORD_FILE
    record.write_text(content)
    # Damaged when it was pushed: its commit record agrees with its files, so the version is served and intact.
    (record.parents[1] / layout.DIGESTS_FILE).write_text(digests_text(str(record.parents[1])))

    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "served: none of the recorded versions" in out, out
    assert f"warning: version 3 ({named.format(record=record)}" in err, err
    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 0 and f"version 3 ({named.format(record=record)}" in out and "not recorded" in out, (out, err)


def test_a_storage_fault_ends_a_rollback_in_one_line_and_the_served_version_stays(root, limit=300):
    """A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored: EFBIG, as a full disk fails a write midway) makes
    TensorFlow's file layer or ML Metadata raise their own errors: one line, exit 1, never a traceback."""
    serving = RunLayout(root).serving_dir

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run([sys.executable, str(REPO / "pipeline_runner.py"), "rollback", "--output-dir",
                             str(root), "--to", "1"], capture_output=True, text=True, timeout=300, cwd=REPO,
                            preexec_fn=limited, env=file_size_limited())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    # Before publishing: stopped; after (only ML Metadata's write failed): the new version named as served.
    assert (line.startswith("error: a storage fault stopped it: ") and "run the command again" in line) or \
        (line.startswith("error: version 3 (version 1's model) is published and is the one served, but recording "
                         "it in ML Metadata failed: ") and line.endswith("the next run or rollback records it")), line
    # Whatever step failed, a server loads a committed, intact version (served.served checks its digests).
    assert served.served(str(serving)).version in (2, 3) and not (root / "serving_model.incomplete").exists()


def test_a_rollback_whose_record_fails_after_publishing_says_the_new_version_is_served(root, capsys, monkeypatch):
    """The store fails the one write after the version is published (a full disk, a lock held too long): the
    line says which version is served now, and the next command records it."""
    import sqlite3

    def failing_record(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    record_push = reconcile.record_push
    monkeypatch.setattr(reconcile, "record_push", failing_record)
    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 1 and served.served(str(RunLayout(root).serving_dir)).version == 3, (out, err)
    assert ("error: version 3 (version 1's model) is published and is the one served, but recording it in ML "
            "Metadata failed: OperationalError: disk I/O error; the next run or rollback records it") in err, err
    monkeypatch.setattr(reconcile, "record_push", record_push)
    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "version 3 (a rollback to version 1" in err and "the next run or rollback records it" in err
    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 0 and "the interrupted rollback to version 1 is complete: its model is served as version 3" in out


@pytest.mark.parametrize("error, is_fault", [
    (OSError(28, "No space left on device"), True), (PermissionError(13, "Permission denied"), True),
    (ValueError("a bug"), False), (KeyError("a bug"), False)])
def test_only_the_storage_libraries_errors_are_storage_faults(error, is_fault):
    assert (errors.storage_fault(error) is not None) == is_fault


def test_tensorflows_and_ml_metadatas_errors_are_storage_faults(tmp_path):
    import sqlite3

    import ml_metadata.errors
    import tensorflow as tf

    raised = []
    for attempt in (lambda: tf.io.gfile.GFile(str(tmp_path / "absent" / "x"), "rb").read(),
                    lambda: sqlite3.connect(f"file:{tmp_path / 'absent.sqlite'}?mode=ro", uri=True).execute("select 1"),
                    lambda: (_ for _ in ()).throw(ml_metadata.errors.InternalError("database or disk is full"))):
        with pytest.raises(Exception) as caught:
            attempt()
        raised.append(caught.value)
    lines = [errors.storage_fault(error) for error in raised]
    assert all(line is not None and "\n" not in str(line) for line in lines), raised


@pytest.mark.parametrize("part", ["serving_model", "examples", "traffic"])
def test_a_place_of_the_root_that_is_a_link_is_refused_before_anything_is_written(root, users_folder, capsys,
                                                                                  tmp_path, part):
    (root / layout.ROOT_MARKER).write_text(json.dumps({"tool": layout.ROOT_MARKER_TOOL}))  # a root of this version
    moved = tmp_path / f"{part}-elsewhere"
    (root / part).mkdir(exist_ok=True)
    (root / part).rename(moved)
    (root / part).symlink_to(users_folder)
    before, outside = tree_digest(root), tree_digest(users_folder)
    images = tmp_path / "images"
    synthetic.write_demo_images(images, 2)
    for argv in (("rollback", "--output-dir", root, "--to", "1"),
                 ("ingest", "--data-dir", images, "--output-dir", root), ("models", "--output-dir", root),
                 ("predict", images, "--output-dir", root, "--record")):
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and f"{root / part} is a symbolic link (to {users_folder}), and links are never " \
            "followed" in err, (argv, out, err)
    assert tree_digest(root) == before and tree_digest(users_folder) == outside


def test_a_version_or_span_numbered_at_the_highest_number_stops_the_next_push_or_ingest_in_one_line(root, capsys,
                                                                                                   tmp_path):
    """Past 2**62 a folder is not read as a version or span: the next one would be written and never listed."""
    import shutil

    highest = str(layout.MAX_NUMBER)
    shutil.copytree(root / "serving_model" / "2", root / "serving_model" / highest)
    before = sorted(os.listdir(root / "serving_model"))
    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 2 and f"holds version {highest}, the highest number a version can have (2**62): no later " \
        "version can be written" in err, (out, err)
    assert sorted(os.listdir(root / "serving_model")) == before  # no version written past it, none staged
    (root / "examples" / f"span-{highest}").mkdir(parents=True)
    images = tmp_path / "images"
    synthetic.write_demo_images(images, 2)
    code, out, err = _cli(capsys, "ingest", "--data-dir", images, "--output-dir", root)
    assert code == 2 and f"holds span {highest}, the highest number a span can have" in err, (out, err)
    assert set(os.listdir(root / "examples")) <= {f"span-{highest}"}  # (moved aside as cut short) none written


def test_the_lock_knows_where_incomplete_folders_are_moved():
    from contract import storage
    from orchestration.root import run_lock

    assert run_lock._ASIDE_SUFFIX == storage.ASIDE_SUFFIX


def _config_names(root) -> int:
    from contract import served

    return served.read_config(str(RunLayout(root).serving_dir)).version


def test_a_config_that_is_a_link_is_never_read_and_the_next_rollback_rewrites_it(root, tmp_path, capsys):
    serving = RunLayout(root).serving_dir
    config = serving / layout.SERVING_CONFIG_FILE
    users = tmp_path / "user.config"
    users.write_text(config.read_text().replace("versions: 2", "versions: 1"))
    config.unlink()
    config.symlink_to(users)

    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "served: version 1" not in out, "what the link points at is not read"
    assert err.count("warning:") == 1, err
    assert (f"warning: {config} is a symbolic link, never followed; the next run or rollback rewrites it"
            in err), err
    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert code == 0 and "served again as version 3" in out, err
    assert not config.is_symlink() and _config_names(root) == 3
    assert users.read_text().count("versions: 1") == 1, "the user's file is untouched"


def test_a_fifo_where_a_file_is_read_is_named_never_waited_on(root, capsys):
    serving = RunLayout(root).serving_dir
    config = serving / layout.SERVING_CONFIG_FILE
    config.unlink()
    os.mkfifo(config)
    code, out, err = _cli(capsys, "models", "--output-dir", root)  # a read of a FIFO would block forever
    assert code == 0 and f"warning: {config}: a FIFO, not a file: never read; the next run or rollback rewrites it" \
        in err, err

    config.unlink()
    assert _cli(capsys, "rollback", "--output-dir", root, "--to", "1")[0] == 0  # named version 3, config rewritten
    digests = serving / "3" / layout.DIGESTS_FILE
    digests.unlink()
    os.mkfifo(digests)
    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and ("version 3: damaged, not a complete version: no readable commit record "
                          f"({layout.DIGESTS_FILE})") in out, out


@pytest.mark.parametrize("version, said", [
    ("9", "models.config names version 9, which is not there: a server loads nothing until a push or rollback "
          "names another"),
    ("-1", "names version -1, and versions are numbered from 1; the next run or rollback rewrites it"),
    ("0", "names version 0, and versions are numbered from 1"),
])
def test_a_config_naming_no_version_says_so_in_one_warning(root, capsys, version, said):
    config = RunLayout(root).serving_dir / layout.SERVING_CONFIG_FILE
    config.write_text(config.read_text().replace("versions: 2", f"versions: {version}"))
    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "served: none of the recorded versions" in out
    assert err.count("warning:") == 1 and said in err, err


def test_predict_with_model_checks_a_pushed_version_and_refuses_links(root, users_folder, capsys):
    serving = RunLayout(root).serving_dir
    (serving / "2" / "saved_model.pb").write_bytes(b"changed since the push")
    code, out, err = _cli(capsys, "predict", "--model", serving / "2", users_folder / "q3.txt")
    assert code != 0 and (f"--model {serving / '2'} is a pushed version that cannot be used as pushed: its files "
                          "differ from those pushed (saved_model.pb: changed since the push)") in err, err
    (serving / "9").symlink_to(serving / "1", target_is_directory=True)
    code, out, err = _cli(capsys, "predict", "--model", serving / "9", users_folder / "q3.txt")
    assert code != 0 and f"--model {serving / '9'}: it is a symbolic link (to {serving / '1'})" in err, err
    code, out, err = _cli(capsys, "predict", "--model", serving / "1", users_folder / "q3.txt")
    assert "pushed version" not in err and "symbolic link" not in err, "an intact version passes the checks"


@contextlib.contextmanager
def _fifos_let_go_after(folder: pathlib.Path, seconds: float, pytestconfig, give_up: float = 120):
    """A command that opened a FIFO under `folder` would wait there for a peer for good. After `seconds`, each FIFO
    under it is opened from both sides, without blocking, and again every 0.2 s until the command ends, which lets
    it go on each time it opens one; yields a list that then says the time ran out. A command still running
    `give_up` seconds after that waits on something else: its threads' stacks are printed (past pytest's capture,
    which has no file descriptor to print to) and the process ends (pytest-xdist reports the worker lost), so that
    the suite fails instead of waiting for good."""
    ran_out, finished = [], threading.Event()

    def let_go():
        for top, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(top, name)
                with contextlib.suppress(OSError):  # removed meanwhile; ENXIO: nobody has it open for reading
                    if stat.S_ISFIFO(os.lstat(path).st_mode):
                        for flags in (os.O_WRONLY | os.O_NONBLOCK, os.O_RDONLY | os.O_NONBLOCK):
                            with contextlib.suppress(OSError):
                                os.close(os.open(path, flags))

    def watch():
        if finished.wait(seconds):
            return
        ran_out.append(f"still running after {seconds} s")
        last = time.monotonic() + give_up
        while not finished.wait(0.2):
            let_go()
            if time.monotonic() > last:
                try:
                    with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
                        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                finally:
                    os._exit(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield ran_out
    finally:
        finished.set()
        watcher.join()


def test_a_rollback_moves_a_version_holding_a_fifo_aside_without_opening_it(root, capsys, pytestconfig):
    sums = RunLayout(root).serving_dir / "2" / layout.DIGESTS_FILE
    sums.unlink()
    os.mkfifo(sums)
    # In this process (a process of its own would import TensorFlow again), with a FIFO opened by mistake let go
    # instead of hanging the test.
    with _fifos_let_go_after(root, 60, pytestconfig) as ran_out:
        code, out, _ = _cli(capsys, "rollback", "--output-dir", root, "--to", "1")
    assert not ran_out, "the rollback did not end within 60 s: it opened the FIFO (or the machine is very slow)"
    assert code == 0 and "version 2 was incomplete" in out and "served again as version 3" in out, out
    [moved] = (root / "serving_model.incomplete").iterdir()
    assert stat.S_ISFIFO((moved / layout.DIGESTS_FILE).lstat().st_mode)


def test_a_push_records_control_characters_are_shown_as_escapes(root, capsys, tmp_path):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "saved_model.pb").write_bytes(b"graph-x")
    version = RunLayout(root).serving_dir / str(push_model(str(stranger), str(RunLayout(root).serving_dir),
                                                           model_uri="/x\nserved: version 1\n\x1b[31mRED").version)
    (version / layout.DIGESTS_FILE).write_text(digests_text(str(version)))
    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0 and "model /x\\nserved: version 1\\n\\x1b[31mRED, pushed" in err, err
    assert "\x1b" not in out + err and "\nserved: version 1\n" not in err


def test_a_rollback_reason_that_would_forge_a_line_is_shown_escaped_and_one_kept_undecodable_is_stored(root, capsys):
    """`models` printed the reason as given: a newline and an escape sequence forged a "served:" line. And a push
    record holding a reason Python could not decode (a lone surrogate) failed every later run and rollback where
    ML Metadata, which keeps UTF-8 only, was given it."""
    code, out, err = _cli(capsys, "rollback", "--output-dir", root, "--to", "1", "--reason",
                          "ok\nserved: version 2\x1b[2K")
    assert code == 0, err
    code, out, err = _cli(capsys, "models", "--output-dir", root)
    assert code == 0
    assert "version 3: rollback to version 1 (version 2 was served): ok\\nserved: version 2\\x1b[2K\n" in out
    assert [line for line in out.splitlines() if line.startswith("served:")] == [
        "served: version 3 (the model of version 1)"]
    # a push record written before the reason was checked holds it: recorded, the text escaped, not refused
    execution = metadata_store_pb2.Execution()
    reconcile._set(execution, metadata_lib.ROLLBACK_REASON, "caf\udce9")
    assert execution.custom_properties[metadata_lib.ROLLBACK_REASON].string_value == "caf\\xe9"


def test_a_rollback_in_a_copied_root_names_its_model_where_the_copy_holds_it_and_leaves_the_origin_alone(tmp_path,
                                                                                                    capsys):
    """A root copied, store and all, before any run there: its store names every model under the root it came
    from. The rollback points the copy's records at the copy first, as a run does, so the version it pushes names
    the copy's model (its push record, its card and ML Metadata's), never the origin's, which stays as it was."""
    import shutil

    origin = tmp_path / "origin"
    _two_versions(origin, lambda number: RunLayout(origin).pipeline_root / "Trainer" / "model" / str(number),
                  lambda number: RunLayout(origin).pipeline_root / "Evaluator" / "blessing" / str(number), cards=True)
    copy = tmp_path / "copy"
    shutil.copytree(origin, copy, symlinks=True)
    origin_before = tree_digest(origin)
    copy_before = tree_digest(copy)
    code, _, err = _cli(capsys, "rollback", "--output-dir", copy, "--to", "9")
    assert code == 2 and err.strip().endswith("nothing was changed")
    assert tree_digest(copy) == copy_before, "a refused rollback changes nothing, the store and config included"

    code, out, err = _cli(capsys, "rollback", "--output-dir", copy, "--to", "1")
    assert code == 0, err
    assert f"this root's store named 6 of its outputs under {origin}, where the root was before" in out + err
    version = RunLayout(copy).serving_dir / "3"
    copied_model = f"{RunLayout(copy).pipeline_root}/Trainer/model/1"
    assert json.loads((version / layout.PUSH_RECORD_FILE).read_text())["model_uri"] == copied_model
    card = (version / layout.MODEL_CARD_FILE).read_text()
    assert f"(a rollback to version 1), a copy of the Trainer's output `{copied_model}`" in card
    assert str(origin) not in card
    assert tree_digest(origin) == origin_before, "the root it was copied from is never touched"
    code, out, _ = _cli(capsys, "models", "--output-dir", copy)
    assert code == 0 and "served: version 3" in out and str(origin) not in out


def test_a_moved_roots_serving_config_is_followed_before_its_store_forgets_the_old_place(tmp_path, monkeypatch):
    """Killed between the two (the store's write failing stands in for the kill), the next run or rollback
    still finds the old place in the store and does both: the config is never left naming the old root."""
    import shutil

    origin, moved = tmp_path / "origin", tmp_path / "moved"
    _two_versions(origin, lambda number: RunLayout(origin).pipeline_root / "Trainer" / "model" / str(number))
    shutil.move(origin, moved)
    store = metadata_lib.open_store(metadata_lib.sqlite_store(RunLayout(moved).metadata_path))
    serving = str(RunLayout(moved).serving_dir)
    uris = sorted(a.uri for a in store.get_artifacts())

    def killed(artifacts):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "put_artifacts", killed)
    with pytest.raises(KeyboardInterrupt):
        reconcile.follow_a_moved_root(store, str(moved), serving)
    assert served.read_config(serving).base_path == served.base_path_of(serving), "followed first"
    assert sorted(a.uri for a in store.get_artifacts()) == uris, "the store not yet written"
    monkeypatch.undo()
    relocated, followed = reconcile.follow_a_moved_root(store, str(moved), serving)
    assert relocated == {str(origin): [4, 0]} and followed is None, "the config already names this place"
    models = [a.uri for a in store.get_artifacts() if not a.uri.endswith("-blessing")]
    assert len(models) == 4 and all(uri.startswith(str(moved)) for uri in models), models
