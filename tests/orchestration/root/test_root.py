"""A pipeline root is the pipeline's own: `run` and `ingest` refuse a folder of the user's, a folder becomes a
root with a marker, an earlier version's root is adopted, and every refusal leaves the folder exactly as it was.

The refusals run through the command line's own entry point in this process (tests.helpers.cli_in_process): a
process of its own would load the libraries again for each.
"""

import hashlib
import json
import os
import pathlib
import stat

import pytest

from config import PipelineConfig
from contract import layout
from contract.errors import CommandError
from orchestration.root import lease, marker, run_lock
from tests.helpers import ROOT, cli_in_process


def snapshot(folder, folder_times=True):
    """{path: (type, size, mtime, sha256)} of `folder` and everything under it, links not followed; None when
    it does not exist. `folder_times`: with the folders' own times and sizes (they change when an entry is
    added and removed again)."""
    folder = pathlib.Path(folder)
    if not os.path.lexists(folder):
        return None
    found = {}
    for path in [folder, *folder.rglob("*")]:
        info = path.lstat()
        regular, directory = stat.S_ISREG(info.st_mode), stat.S_ISDIR(info.st_mode)
        timed = folder_times or not directory
        found[str(path.relative_to(folder))] = (
            stat.S_IFMT(info.st_mode), info.st_size if timed else None, info.st_mtime_ns if timed else None,
            hashlib.sha256(path.read_bytes()).hexdigest() if regular else os.readlink(path) if not directory else None)
    return found


def cli(*argv, timeout=None):
    """The command through the command line's entry point in this process (tests.helpers.cli_in_process): what is
    checked is its exit code, its one line and the folders; a process of its own would load the libraries again
    (seconds of CPU for each command that reaches TensorFlow). `timeout` is a process's, unused here."""
    return cli_in_process(*argv)


def error_line(result) -> str:
    """The one error line of a command (TensorFlow's start-up may print other lines to stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def user_folder(base):
    """The probe's folder: a user's files, one of them named as the pipeline names its summary."""
    folder = base / "q3"
    (folder / "report").mkdir(parents=True)
    (folder / "report" / "q3.txt").write_text("third quarter\n")
    (folder / "run_summary.json").write_text('{"mine": true}\n')
    (folder / "notes.txt").write_text("keep\n")
    return folder


def last_run_root(base):
    """A root whose last run left its summary and report (and no spans: a run there needs a source)."""
    folder = base / "root"
    (folder / "report").mkdir(parents=True)
    (folder / layout.ROOT_MARKER).write_text("{}\n")
    (folder / "report" / "index.html").write_text("<html>the last run</html>\n")
    (folder / "run_summary.json").write_text('{"run_id": "the last run"}\n')
    (folder / "tfdv_statistics.html").write_text("<html></html>\n")
    return folder


_STORE = {}


def mlmd_store(path):
    """An ML Metadata SQLite store, made by ML Metadata itself (once, then copied)."""
    if not _STORE:
        import tempfile

        from ml_metadata import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        with tempfile.TemporaryDirectory() as made:
            config = metadata_store_pb2.ConnectionConfig()
            config.sqlite.filename_uri = os.path.join(made, "metadata.sqlite")
            config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
            metadata_store.MetadataStore(config)
            _STORE["bytes"] = pathlib.Path(config.sqlite.filename_uri).read_bytes()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_bytes(_STORE["bytes"])


def another_apps_database(path):
    """Another program's SQLite database, named as the pipeline names its store."""
    import sqlite3

    connection = sqlite3.connect(path)
    connection.execute("create table photos(id integer, caption text)")
    connection.execute("insert into photos values (1, 'my holiday')")
    connection.commit()
    connection.close()


SUMMARY = json.dumps({"pipeline": "cats-vs-dogs", "run_id": "2026-01-01T00:00:00", "nodes": []})


def earlier_root_with_notes(base):
    """A root an earlier version made (no marker), where the user also put a file of their own."""
    folder = base / "earlier"
    (folder / "examples" / "span-1").mkdir(parents=True)
    mlmd_store(folder / "metadata.sqlite")
    (folder / "notes.txt").write_text("keep\n")
    return folder


def a_users_project_folder(base):
    """A user's project folder: another program's metadata.sqlite, the user's report/thesis.txt and examples.txt
    (adopted once, and the run removed report/ and wrote ML Metadata's tables beside `photos`)."""
    folder = base / "userproj"
    (folder / "report").mkdir(parents=True)
    another_apps_database(folder / "metadata.sqlite")
    (folder / "report" / "thesis.txt").write_text("my thesis\n")
    (folder / "examples.txt").write_text("notes\n")
    return folder


def earlier_root_with_a_users_report(base):
    """A real earlier root (its ML Metadata store, a committed span), where the user keeps a file in report/."""
    folder = base / "earlier"
    mlmd_store(folder / "metadata.sqlite")
    (folder / "examples" / "span-1").mkdir(parents=True)
    (folder / "examples" / "span-1" / layout.INGEST_REPORT).write_text("{}\n")
    (folder / "report").mkdir()
    (folder / "report" / "index.html").write_text("<html>the last run</html>\n")
    (folder / "report" / "thesis.txt").write_text("my thesis\n")
    (folder / "run_summary.json").write_text(SUMMARY)
    return folder


NOT_A_ROOT = "is not empty and is not a root of this pipeline (it has no .cats-vs-dogs-root and holds notes.txt, " \
             "report, run_summary.json): nothing was changed"
MISSING = "/nonexistent/images"


@pytest.mark.parametrize("make, argv, message", [
    (user_folder, ["run"], NOT_A_ROOT),  # the probe: no source given
    (user_folder, ["run", "--demo"], NOT_A_ROOT),
    (user_folder, ["run", "--data-dir", MISSING], NOT_A_ROOT),
    (user_folder, ["ingest", "--demo"], NOT_A_ROOT),
    (earlier_root_with_notes, ["run", "--demo"], "looks like a root of an earlier version of this pipeline but also "
                                                 "holds notes.txt, which the pipeline never writes there"),
    (a_users_project_folder, ["run", "--data-dir", "."], "holds metadata.sqlite, which has no ML Metadata tables"),
    (earlier_root_with_a_users_report, ["run", "--data-dir", "."], "also holds report/thesis.txt, which the "
                                                                   "pipeline never writes there"),
    (last_run_root, ["run"], "no source given and no spans in"),
    (last_run_root, ["run", "--data-dir", MISSING], f"data directory '{MISSING}' does not exist"),
    (last_run_root, ["run", "--parquet", MISSING], f"parquet source '{MISSING}' does not exist"),
    (last_run_root, ["ingest", "--data-dir", MISSING], f"data directory '{MISSING}' does not exist"),
    (last_run_root, ["run", "--demo", "--weights", "/nonexistent.h5"], "--weights /nonexistent.h5: no such file"),
    (last_run_root, ["run", "--demo", "--fine-tune-from", "100000"], "invalid fine_tune_from"),
    (last_run_root, ["run", "--demo", "--demo-images", "0"], None),  # refused by the parser
    (last_run_root, ["run", "--demo", "--tune", "--tune-trials", "0"], "invalid tune_trials: must be an integer in"),
    (last_run_root, ["run", "--demo", "--tune", "--tune-minutes", "-5"], "invalid tune_minutes: must be a number >= 0"),
    (last_run_root, ["run", "--demo", "--tune", "--tune-epoch-fraction", "-0.5"], "invalid tune_epoch_fraction"),
    (last_run_root, ["run", "--demo", "--tune-trials", "3"], "--tune-trials applies only with --tune"),
    (lambda base: base / "new" / "out", ["run"], "no source given and no spans in"),
    (lambda base: base / "new" / "out", ["ingest", "--data-dir", MISSING], f"data directory '{MISSING}' does not"),
])
def test_every_refusal_leaves_the_folder_exactly_as_it_was(tmp_path, make, argv, message):
    folder = make(tmp_path)
    before, around = snapshot(folder), snapshot(tmp_path)
    result = cli(*argv, "--output-dir", folder, timeout=60)
    assert result.returncode == 2, result.stderr
    if message is not None:
        assert message in error_line(result)
    assert snapshot(folder) == before and snapshot(tmp_path) == around


def test_a_run_on_a_root_another_run_holds_exits_3_and_changes_nothing(tmp_path):
    """Every file as it was; the folder's own time changes (the lease's try at an atomic create, undone)."""
    folder = last_run_root(tmp_path)
    with run_lock.exclusive_run(folder):
        before = snapshot(folder, folder_times=False)
        result = cli("run", "--demo", "--output-dir", folder, timeout=60)
        assert snapshot(folder, folder_times=False) == before
    assert result.returncode == 3 and "another run of this pipeline is in progress" in error_line(result)


def test_a_local_schedule_for_a_folder_of_the_users_is_refused(tmp_path):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    result = cli("schedule", "--local", "--cron", "0 3 * * *", "--data-dir", tmp_path, "--output-dir", folder,
                 timeout=60)
    assert result.returncode == 2 and NOT_A_ROOT in error_line(result)
    assert snapshot(folder) == before


def test_a_run_refused_by_its_ingest_keeps_the_last_runs_summary_and_report(tmp_path):
    """Refused once it held the lease (no usable images: found by the ingest itself): the previous run's summary
    and report stay, and no lease file, marker or empty folder is left behind."""
    folder, images = last_run_root(tmp_path), tmp_path / "no_images"
    images.mkdir()
    before = snapshot(folder, folder_times=False)
    result = cli("run", "--data-dir", images, "--output-dir", folder)
    assert result.returncode == 2 and f"no usable images in folder source {images}" in error_line(result)
    assert snapshot(folder, folder_times=False) == before


def test_an_earlier_versions_root_is_adopted_and_keeps_its_spans(tmp_path):
    folder = tmp_path / "earlier"
    span = folder / "examples" / "span-1"
    span.mkdir(parents=True)
    mlmd_store(folder / "metadata.sqlite")
    (span / "from_an_earlier_version.txt").write_text("kept\n")
    (folder / "scheduled_runs.log").write_text("an earlier run\n")
    result = cli("ingest", "--demo", "--demo-images", "2", "--output-dir", folder)
    assert result.returncode == 0, result.stderr
    assert f"adopted {folder} as this pipeline's root (made by an earlier version)" in result.stdout
    written = json.loads((folder / layout.ROOT_MARKER).read_text())
    assert written["tool"] == layout.ROOT_MARKER_TOOL and written["adopted"] is True
    assert (span / "from_an_earlier_version.txt").read_text() == "kept\n"
    assert (folder / "examples" / "span-2" / layout.INGEST_REPORT).is_file()


# The rule, in this process -------------------------------------------------------------------------------------

# What each file a run writes holds; any other file is empty. "metadata.sqlite": a real ML Metadata store.
CONTENT = {"run_summary.json": SUMMARY.encode(), "tfdv_statistics.html": b"<!doctype html><html><body>f</body></html>",
           layout.INGEST_REPORT: b"{}", "SHA256SUMS": b""}
SPAN, VERSION = f"examples/span-3/{layout.INGEST_REPORT}", f"serving_model/2/{layout.DIGESTS_FILE}"


def _make(folder, entries):
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        path = folder / entry
        if entry.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        elif entry == "metadata.sqlite":
            mlmd_store(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(CONTENT.get(path.name, b""))


@pytest.mark.parametrize("entries, state", [
    ([], marker.NEW),
    ([lease.LEASE_FILE, lease.LEASE_FILE + ".guard", "scheduled_runs.log"], marker.NEW),
    ([lease.LEASE_FILE + ".host.7.f00.creating", layout.WRITE_PROBE_PREFIX + "f00"], marker.NEW),  # a racing run's
    ([layout.ROOT_MARKER, "notes.txt"], marker.ROOT),
    (["metadata.sqlite"], marker.EARLIER),
    ([SPAN, "pipeline_root/", "run_summary.json", ".report.incoming/index.html"], marker.EARLIER),
    ([VERSION, "serving_model.incomplete/", "metadata.sqlite-journal"], marker.EARLIER),
    ([VERSION, "traffic/span-1/traffic_report.json", "traffic.incomplete/span-2-20260101T000000Z/"],
     marker.EARLIER),  # what the traffic sink and predict write
    ([VERSION, "monitoring/check-20261125T000000000000Z/index.html", "labeling/queue-1/queue.json"],
     marker.EARLIER),  # what monitor writes, on a root it did not claim
    ([SPAN, "schema/schema.pbtxt", "runs/", "examples.incomplete/span-4-20260101T000000Z/", "demo_images/cat/",
      "predictions/", "tfdv_statistics.html", "scheduled_runs.log", lease.LEASE_FILE + ".guard",
      "run_summary.json." + "0" * 32 + ".tmp", *(f"report/{name}" for name in sorted(marker.REPORT_FILES))],
     marker.EARLIER),
])
def test_what_is_taken_for_a_root(tmp_path, entries, state):
    _make(tmp_path / "f", entries)
    before = snapshot(tmp_path / "f")
    assert marker.inspect(tmp_path / "f").state == state
    assert snapshot(tmp_path / "f") == before  # the store read, never written (no journal, no new table)


def test_a_marker_that_is_a_folder_or_a_link_marks_nothing(tmp_path):
    for kind in ("folder", "link"):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "taxes.pdf").write_bytes(b"mine")
        marker_path = folder / layout.ROOT_MARKER
        marker_path.mkdir() if kind == "folder" else marker_path.symlink_to(tmp_path / "elsewhere")
        before = snapshot(folder)
        with pytest.raises(marker.NotARootError, match="is not a file"):
            marker.inspect(folder)
        assert snapshot(folder) == before


@pytest.mark.parametrize("entries, named", [
    (["notes.txt"], "holds notes.txt"),
    (["run_summary.json", "report/"], "is not a root"),  # the pipeline's names, but nothing only a run leaves
    (["examples/", "serving_model/latest/", "examples/span-x/"], "is not a root"),
    (["metadata.sqlite/"], "metadata.sqlite, which is not a file"),  # a folder where the store is a file
    (["metadata.sqlite", "notes.txt"], "also holds notes.txt"),
    (["kfp/"], "is not a root"),  # KFP's folder counts only beside a gs:// root
    # Names are no evidence: /tmp folders named a, b and c, and a span, a version, a schema
    (["examples.py", "report/thesis.docx", "report-final.docx", "runs.txt", "schema/schema.pbtxt"], "is not a root"),
    (["metadata.sqlite-backup.tar", "predictions/holiday.jpg", "serving_model/1/"], "is not a root"),
    (["demo_images/mycat.jpg", "examples/span-3/", "tfdv_statistics.html"], "is not a root"),
    (["examples/span-3/eval/part-0", "serving_model/1/saved_model.pb"], "is not a root"),
    # Real evidence does not make a user's file the pipeline's
    ([SPAN, "examples.py"], "also holds examples.py"),
    ([SPAN, "report-final.docx", "runs.txt"], "also holds report-final.docx, runs.txt"),
    ([VERSION, "metadata.sqlite-backup.tar", "tfdv_statistics.html.bak"], "metadata.sqlite-backup.tar, tfdv"),
    (["metadata.sqlite", "report/thesis.docx", "report/index.html"], "also holds report/thesis.docx"),
    (["metadata.sqlite", "report/figures/"], "also holds report/figures"),
    (["metadata.sqlite", ".report.incoming/notes.txt"], "also holds .report.incoming/notes.txt"),
    (["metadata.sqlite", "report"], "also holds report,"),  # a file where the report is a folder
    (["metadata.sqlite", "run_summary.json/"], "also holds run_summary.json,"),
    ([SPAN, "schema/", "pipeline_root"], "also holds pipeline_root,"),
])
def test_what_is_not_taken_for_a_root(tmp_path, entries, named):
    _make(tmp_path / "f", entries)
    before = snapshot(tmp_path / "f")
    with pytest.raises(marker.NotARootError, match="nothing was changed") as refused:
        marker.inspect(tmp_path / "f")
    assert named in str(refused.value)
    assert snapshot(tmp_path / "f") == before


def test_a_users_summary_or_statistics_page_in_an_earlier_root_is_named(tmp_path):
    """What a run removes first must be the last run's: a user's file of that name is named, kept."""
    _make(tmp_path / "f", ["metadata.sqlite", "run_summary.json", "tfdv_statistics.html"])
    (tmp_path / "f" / "run_summary.json").write_text('{"mine": true}\n')
    (tmp_path / "f" / "tfdv_statistics.html").write_text("<html>my statistics</html>\n")
    with pytest.raises(marker.NotARootError) as refused:
        marker.inspect(tmp_path / "f")
    assert "run_summary.json (not a run summary), tfdv_statistics.html (not TFDV's statistics page)" in \
        str(refused.value)


@pytest.mark.parametrize("store", [another_apps_database, lambda path: path.write_text("my notes\n"),
                                   lambda path: path.write_bytes(b"")])
def test_a_metadata_sqlite_that_is_not_an_ml_metadata_store_is_refused_even_beside_a_run(tmp_path, store):
    """Another program's database, whatever else is there: read, never written."""
    _make(tmp_path / "f", [SPAN, VERSION, "pipeline_root/"])
    store(tmp_path / "f" / "metadata.sqlite")
    before = snapshot(tmp_path / "f")
    with pytest.raises(marker.NotARootError, match="holds metadata.sqlite, which (has no ML Metadata tables|is not an "
                                                  "SQLite database).*another program's"):
        marker.inspect(tmp_path / "f")
    assert snapshot(tmp_path / "f") == before


def _registered(path, pipeline):
    """A store in which a run of `pipeline` registered its context, as TFX does (a context of type `pipeline`)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    mlmd_store(path)
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    store = metadata_store.MetadataStore(config)
    type_id = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline"))
    store.put_contexts([metadata_store_pb2.Context(type_id=type_id, name=pipeline)])


def test_another_pipelines_ml_metadata_store_is_refused_and_this_pipelines_is_adopted(tmp_path):
    """Tables alone are any TFX pipeline's: the pipeline its runs registered says whose store it is."""
    _make(tmp_path / "other", ["pipeline_root/", "serving_model/"])
    _registered(tmp_path / "other" / "metadata.sqlite", "penguin")
    before = snapshot(tmp_path / "other")
    with pytest.raises(marker.NotARootError, match="which is the ML Metadata store of another pipeline \\(penguin\\)"):
        marker.inspect(tmp_path / "other")
    assert snapshot(tmp_path / "other") == before
    _make(tmp_path / "ours", ["pipeline_root/"])
    _registered(tmp_path / "ours" / "metadata.sqlite", PipelineConfig().name)
    assert marker.inspect(tmp_path / "ours").state == marker.EARLIER


def test_a_link_at_the_top_of_an_earlier_root_is_refused(tmp_path):
    _make(tmp_path / "f", ["metadata.sqlite"])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "f" / "report").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(marker.NotARootError, match="also holds report, which"):
        marker.inspect(tmp_path / "f")


def test_the_rules_names_are_those_the_pipeline_writes():
    """The report's figures and the folders cut short go under these names (their modules import TensorFlow)."""
    import re

    from contract import storage

    written = set(re.findall(r'"([a-z_]+\.(?:png|html))"', (ROOT / "reporting" / "run_report.py").read_text()))
    assert written - {"tfdv_statistics.html"} <= marker.REPORT_FILES and layout.REPORT_PAGE in marker.REPORT_FILES
    assert marker._ASIDE == storage.ASIDE_SUFFIX


def test_a_file_and_a_name_that_is_not_utf8_are_named_in_one_printable_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(marker.NotARootError, match="is a file, not a folder"):
        marker.inspect(tmp_path / "file")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("x")
    with pytest.raises(marker.NotARootError) as refused:
        marker.inspect(folder)
    assert "caf\\xe9.txt" in str(refused.value)
    str(refused.value).encode("ascii")
    # a newline in a name would forge a line of the message
    (folder / "notes\nError: forged.txt").write_text("x")
    with pytest.raises(marker.NotARootError) as refused:
        marker.inspect(folder)
    assert "\n" not in str(refused.value) and "notes\\nError: forged.txt" in str(refused.value)


def test_an_absent_folder_becomes_a_root_once_the_lease_is_held(tmp_path):
    folder = tmp_path / "a" / "b"
    with run_lock.exclusive_run(folder, claim=True) as held:
        assert held.adopted is None
        written = json.loads((folder / layout.ROOT_MARKER).read_text())
    assert written["tool"] == layout.ROOT_MARKER_TOOL and written["adopted"] is False
    assert marker.inspect(folder).state == marker.ROOT


def test_a_refusal_under_the_lease_puts_back_an_absent_folder_and_its_parents(tmp_path):
    around = snapshot(tmp_path, folder_times=False)
    with pytest.raises(CommandError, match="refused"):
        with run_lock.exclusive_run(tmp_path / "a" / "b", claim=True):
            (tmp_path / "a" / "b" / "examples" / ".staging").mkdir(parents=True)
            raise CommandError("refused")
    assert snapshot(tmp_path, folder_times=False) == around


def test_a_refusal_under_the_lease_leaves_an_earlier_root_unadopted_and_as_it_was(tmp_path):
    folder = tmp_path / "earlier"
    (folder / "examples" / "span-1").mkdir(parents=True)
    (folder / "examples" / "span-1" / "part-0").write_text("x")
    (folder / "examples" / "span-1" / layout.INGEST_REPORT).write_text("{}\n")
    before = snapshot(folder, folder_times=False)
    with pytest.raises(CommandError):
        with run_lock.exclusive_run(folder, claim=True) as held:
            assert held.adopted and (folder / layout.ROOT_MARKER).exists()
            (folder / "user_wrote_this_meanwhile.txt").write_text("kept")
            raise CommandError("refused")
    # only what the run added is taken back, never a file someone else wrote meanwhile
    assert (folder / "user_wrote_this_meanwhile.txt").read_text() == "kept"
    (folder / "user_wrote_this_meanwhile.txt").unlink()
    assert snapshot(folder, folder_times=False) == before


def test_kubeflows_ingest_and_report_tasks_write_nothing_into_a_folder_of_the_users(tmp_path, capsys):
    from orchestration.engines import kfp_tasks

    folder = user_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(SystemExit) as ended:
        kfp_tasks.ingest("folder", str(tmp_path), str(folder), {}, "sqlite:///nowhere", "run-1", 3600, say=print)
    assert ended.value.code == 1 and NOT_A_ROOT in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kfp_tasks.report("sqlite:///nowhere", "run-1", "cats-vs-dogs", str(folder), {}, [], str(tmp_path / "m.md"),
                         str(tmp_path / "r.html"), say=print)
    assert NOT_A_ROOT in capsys.readouterr().err
    assert snapshot(folder) == before


def test_the_rule_holds_on_an_object_store(monkeypatch):
    """gs:// roots (Kubeflow, Vertex AI) through contract.storage, with Cloud Storage's flat namespace."""
    from contract import storage
    from tests.object_store import FakeObjectStore

    store = FakeObjectStore({"gs://b/new/kfp/run/x": b"", "gs://b/old/examples/span-1/ingest_report.json": b"{}",
                             "gs://b/old/runs/r/run_summary.json": b"{}", "gs://b/user/notes.txt": b""})
    monkeypatch.setattr(storage, "backend", store)
    assert marker.inspect("gs://b/absent").state == marker.NEW
    assert marker.inspect("gs://b/new").state == marker.NEW  # KFP's own folder beside the root does not count
    found = marker.inspect("gs://b/old")
    assert found.state == marker.EARLIER
    assert "adopted gs://b/old" in marker.claim("gs://b/old", found)
    assert json.loads(store.read("gs://b/old/" + layout.ROOT_MARKER))["adopted"] is True
    assert marker.inspect("gs://b/old").state == marker.ROOT
    with pytest.raises(marker.NotARootError, match="holds notes.txt"):
        marker.inspect("gs://b/user")
