"""Writes that meet a full disk leave nothing half-written behind: on a real, small tmpfs where one can be mounted
(root with CAP_SYS_ADMIN), and for any user under a file size limit (RLIMIT_FSIZE): a write past it fails
midway with EFBIG ("File too large"), as a write fails on a full disk."""

import contextlib
import json
import os
import resource
import signal
import subprocess

import pytest

from reporting import run_summary
from tests.helpers import no_bytecode_written

pytestmark = pytest.mark.faults


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN) to fill a disk for real")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(folder):
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # full
            pass


def _summary(**changes):
    fields = dict(pipeline="cats-vs-dogs", run_id="7", nodes=[], metrics={}, metrics_by_label={},
                  confusion_matrix=None, blessed=None, decision=None, pushed_version=None, pushed_path=None)
    return run_summary.RunSummary(**(fields | changes))


def test_summary_on_a_full_disk_raises_and_leaves_the_old_file_whole(small_disk):
    path = small_disk / "run_summary.json"
    run_summary.write_json(_summary(run_id="earlier"), str(path))
    _fill(small_disk)
    with pytest.raises(OSError, match="No space left on device"):
        run_summary.write_json(_summary(error="x" * 200_000), str(path))
    assert json.loads(path.read_text())["run_id"] == "earlier"
    assert sorted(os.listdir(small_disk)) == ["filler", "run_summary.json"]


def test_push_onto_a_full_disk_removes_its_staging_copy(small_disk, tmp_path):
    from components import serving_pusher

    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(os.urandom(40_000))
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(60_000))
    with pytest.raises(Exception, match="(?i)no space left|resource exhausted"):
        serving_pusher.push_model(str(model), str(small_disk / "serving"))
    assert os.listdir(small_disk / "serving") == []



@contextlib.contextmanager
def _file_size_limit(size_bytes):
    """Writes past `size_bytes` in any file fail with EFBIG until the block ends (only the soft limit is lowered,
    so it can be raised back; SIGXFSZ ignored, as Python has it, so the write fails rather than the process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_bytes, hard))
    try:
        with no_bytecode_written():
            yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_summary_past_a_file_size_limit_raises_and_leaves_the_old_file_whole(tmp_path):
    """Any user can run this one and the next: no mount needed."""
    path = tmp_path / "run_summary.json"
    run_summary.write_json(_summary(run_id="earlier"), str(path))
    with _file_size_limit(50_000), pytest.raises(OSError, match="File too large"):
        run_summary.write_json(_summary(error="x" * 200_000), str(path))
    assert json.loads(path.read_text())["run_id"] == "earlier"
    assert sorted(os.listdir(tmp_path)) == ["run_summary.json"]


def test_push_past_a_file_size_limit_removes_its_staging_copy(tmp_path):
    from components import serving_pusher

    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(os.urandom(40_000))
    (model / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(60_000))  # past the limit
    with _file_size_limit(50_000), pytest.raises(Exception, match="(?i)file too large"):
        serving_pusher.push_model(str(model), str(tmp_path / "serving"))
    assert os.listdir(tmp_path / "serving") == []
