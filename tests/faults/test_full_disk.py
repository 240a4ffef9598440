"""Writes that meet a full disk (a real, small tmpfs) leave nothing half-written behind."""

import json
import os
import subprocess

import pytest

from reporting import run_summary

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
