"""A pipeline root is the pipeline's own: `run` and `ingest` refuse a folder of the user's, a folder becomes a
root with a marker, an earlier version's root is adopted, and every refusal leaves the folder exactly as it was.

The refusals run through the real command line in a process of their own; they come before TensorFlow is
imported, so each takes about a second.
"""

import hashlib
import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest

from contract import layout
from contract.errors import CommandError
from orchestration import lease, roots, run_lock
from tests.helpers import ROOT


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


def cli(*argv, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


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


def earlier_root_with_notes(base):
    """A root an earlier version made (no marker), where the user also put a file of their own."""
    folder = base / "earlier"
    (folder / "examples" / "span-1").mkdir(parents=True)
    (folder / "metadata.sqlite").write_bytes(b"")
    (folder / "notes.txt").write_text("keep\n")
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
    (last_run_root, ["run"], "no source given and no spans in"),
    (last_run_root, ["run", "--data-dir", MISSING], f"data directory '{MISSING}' does not exist"),
    (last_run_root, ["run", "--parquet", MISSING], f"parquet source '{MISSING}' does not exist"),
    (last_run_root, ["ingest", "--data-dir", MISSING], f"data directory '{MISSING}' does not exist"),
    (last_run_root, ["run", "--demo", "--weights", "/nonexistent.h5"], "--weights /nonexistent.h5: no such file"),
    (last_run_root, ["run", "--demo", "--fine-tune-from", "100000"], "invalid fine_tune_from"),
    (last_run_root, ["run", "--demo", "--demo-images", "0"], None),  # refused by the parser
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
    (span / "from_an_earlier_version.txt").write_text("kept\n")
    (folder / "scheduled_runs.log").write_text("an earlier run\n")
    result = cli("ingest", "--demo", "--demo-images", "2", "--output-dir", folder)
    assert result.returncode == 0, result.stderr
    assert f"adopted {folder} as this pipeline's root (made by an earlier version)" in result.stdout
    marker = json.loads((folder / layout.ROOT_MARKER).read_text())
    assert marker["tool"] == layout.ROOT_MARKER_TOOL and marker["adopted"] is True
    assert (span / "from_an_earlier_version.txt").read_text() == "kept\n"
    assert (folder / "examples" / "span-2" / layout.INGEST_REPORT).is_file()


# The rule, in this process -------------------------------------------------------------------------------------

def _make(folder, entries):
    for entry in entries:
        path = folder / entry
        if entry.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")


@pytest.mark.parametrize("entries, state", [
    ([], roots.NEW),
    ([lease.LEASE_FILE, lease.LEASE_FILE + ".guard", "scheduled_runs.log"], roots.NEW),
    ([lease.LEASE_FILE + ".host.7.f00.creating", layout.WRITE_PROBE_PREFIX + "f00"], roots.NEW),  # a racing run's
    ([layout.ROOT_MARKER, "notes.txt"], roots.ROOT),
    (["metadata.sqlite"], roots.EARLIER),
    (["examples/span-3/", "pipeline_root/", "run_summary.json", ".report.incoming/"], roots.EARLIER),
    (["serving_model/2/", "serving_model.incomplete/", "metadata.sqlite-journal"], roots.EARLIER),
    (["schema/schema.pbtxt", "runs/"], roots.EARLIER),
])
def test_what_is_taken_for_a_root(tmp_path, entries, state):
    _make(tmp_path / "f", entries)
    (tmp_path / "f").mkdir(exist_ok=True)
    assert roots.inspect(tmp_path / "f").state == state


@pytest.mark.parametrize("entries", [
    ["notes.txt"],
    ["run_summary.json", "report/"],  # the pipeline's names, but nothing only a run leaves
    ["examples/", "serving_model/latest/", "examples/span-x/"],
    ["metadata.sqlite/"],  # a folder where the store is a file
    ["metadata.sqlite", "notes.txt"],
    ["kfp/"],  # KFP's folder counts only beside a gs:// root
])
def test_what_is_not_taken_for_a_root(tmp_path, entries):
    _make(tmp_path / "f", entries)
    with pytest.raises(roots.NotARootError, match="nothing was changed"):
        roots.inspect(tmp_path / "f")


def test_a_file_and_a_name_that_is_not_utf8_are_named_in_one_printable_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(roots.NotARootError, match="is a file, not a folder"):
        roots.inspect(tmp_path / "file")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("x")
    with pytest.raises(roots.NotARootError) as refused:
        roots.inspect(folder)
    assert "caf\\xe9.txt" in str(refused.value)
    str(refused.value).encode("ascii")


def test_an_absent_folder_becomes_a_root_once_the_lease_is_held(tmp_path):
    folder = tmp_path / "a" / "b"
    with run_lock.exclusive_run(folder, claim=True) as held:
        assert held.adopted is None
        marker = json.loads((folder / layout.ROOT_MARKER).read_text())
    assert marker["tool"] == layout.ROOT_MARKER_TOOL and marker["adopted"] is False
    assert roots.inspect(folder).state == roots.ROOT


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
    from orchestration import kfp_tasks

    folder = user_folder(tmp_path)
    before = snapshot(folder)
    with pytest.raises(SystemExit) as ended:
        kfp_tasks.ingest("folder", str(tmp_path), str(folder), {}, "sqlite:///nowhere", "run-1", 3600)
    assert ended.value.code == 1 and NOT_A_ROOT in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kfp_tasks.report("sqlite:///nowhere", "run-1", "cats-vs-dogs", str(folder), {}, [], str(tmp_path / "m.md"),
                         str(tmp_path / "r.html"))
    assert NOT_A_ROOT in capsys.readouterr().err
    assert snapshot(folder) == before


def test_the_rule_holds_on_an_object_store(monkeypatch):
    """gs:// roots (Kubeflow, Vertex AI) through contract.storage, with Cloud Storage's flat namespace."""
    from contract import storage
    from tests.object_store import FakeObjectStore

    store = FakeObjectStore({"gs://b/new/kfp/run/x": b"", "gs://b/old/examples/span-1/ingest_report.json": b"{}",
                             "gs://b/old/runs/r/run_summary.json": b"{}", "gs://b/user/notes.txt": b""})
    monkeypatch.setattr(storage, "backend", store)
    assert roots.inspect("gs://b/absent").state == roots.NEW
    assert roots.inspect("gs://b/new").state == roots.NEW  # KFP's own folder beside the root does not count
    found = roots.inspect("gs://b/old")
    assert found.state == roots.EARLIER
    assert "adopted gs://b/old" in roots.claim("gs://b/old", found)
    assert json.loads(store.read("gs://b/old/" + layout.ROOT_MARKER))["adopted"] is True
    assert roots.inspect("gs://b/old").state == roots.ROOT
    with pytest.raises(roots.NotARootError, match="holds notes.txt"):
        roots.inspect("gs://b/user")
