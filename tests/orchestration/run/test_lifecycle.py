"""The steps after the DAG, written once (orchestration.run.lifecycle.after_the_dag): the local run writes them
under its output directory, the Kubeflow exit handler under <root>/runs/<run id>/, on a disk or an object
store alike."""

import json

import pytest

from contract import errors, layout, storage
from orchestration.engines import kfp_tasks
from orchestration.run import lifecycle
from reporting import run_summary
from tests.object_store import FakeObjectStore


def _summary(**changes):
    fields = dict(pipeline="cats-vs-dogs", run_id="run-7", nodes=[], metrics={}, metrics_by_label={},
                  confusion_matrix=None, blessed=None, decision=None, pushed_version=None, pushed_path=None)
    return run_summary.RunSummary(**(fields | changes))


def _before():
    return lifecycle.BeforeTheDag(ingest=None, table="", canceled=["Trainer"],
                                  took_over={"run_id": "run-6", "why": "no heartbeat for 2 h"})


def test_on_a_disk_the_summary_and_report_are_written_with_what_happened_before_the_dag(tmp_path, capsys):
    page = lifecycle.after_the_dag(_summary(), _before(), str(tmp_path), {}, say=print, error="failed at Trainer: boom",
                                   beam_args=["--direct_num_workers=1"], notes=["a note"])
    written = json.loads((tmp_path / layout.SUMMARY_FILE).read_text())
    assert written["error"] == "failed at Trainer: boom" and written["beam_args"] == ["--direct_num_workers=1"]
    assert written["notes"][0] == "a note" and any("took over the pipeline root from run run-6" in note
                                                   for note in written["notes"][1:])
    assert page == str(tmp_path / layout.REPORT_DIR / layout.REPORT_PAGE)
    assert "boom" in (tmp_path / layout.REPORT_DIR / layout.REPORT_PAGE).read_text()
    printed = capsys.readouterr().out
    assert "FAILED" in printed and f"summary written to {tmp_path / layout.SUMMARY_FILE}" in printed


def test_on_an_object_store_the_report_is_copied_and_reads_back_as_one_file(monkeypatch):
    store = FakeObjectStore()
    monkeypatch.setattr(storage, "backend", store)
    folder = "gs://bucket/root/runs/run-7"
    page = lifecycle.after_the_dag(_summary(), None, folder, {}, say=print)
    assert json.loads(store.objects[f"{folder}/{layout.SUMMARY_FILE}"])["run_id"] == "run-7"
    assert page == f"{folder}/{layout.REPORT_DIR}/{layout.REPORT_PAGE}" and page in store.objects
    store.objects[f"{folder}/{layout.REPORT_DIR}/figure.png"] = b"\x89PNG"
    html = kfp_tasks.inline_images('<img src="figure.png"><img src="absent.png">', f"{folder}/{layout.REPORT_DIR}")
    assert 'src="data:image/png;base64,iVBORw=="' in html and 'src="absent.png"' in html


def test_a_summary_that_cannot_be_written_is_one_line_after_the_printed_summary(tmp_path, capsys):
    (tmp_path / "full").write_text("a file where the run's folder should be")
    with pytest.raises(lifecycle.ReportNotWritten, match="the run summary could not be written to .*full/"):
        lifecycle.after_the_dag(_summary(), None, str(tmp_path / "full"), {}, say=print)
    assert "Pipeline cats-vs-dogs" in capsys.readouterr().out


def test_the_start_of_a_run_says_the_table_then_the_messages_and_clears_the_previous_output_unless_refused(
        tmp_path):
    from config import DataConfig
    from ingest import synthetic

    synthetic.write_demo_images(tmp_path / "images", 2)
    (tmp_path / "junk" / "cat").mkdir(parents=True)
    (tmp_path / "junk" / "cat" / "a.jpg").write_bytes(b"not an image")
    cleared, said = [], []
    start = dict(say=said.append, clear_previous=lambda: cleared.append(True))
    with pytest.raises(errors.CommandError, match="no usable images") as refused:
        lifecycle.start_run(None, str(tmp_path / "examples"), "folder", str(tmp_path / "junk"), DataConfig(), **start)
    assert refused.value.exit_code == errors.REFUSED and cleared == [] and said == []
    (tmp_path / "a-file").write_text("where the examples' folder would go")
    with pytest.raises(Exception) as failed:  # failed, not refused: the previous output is never this run's
        lifecycle.start_run(None, str(tmp_path / "a-file" / "examples"), "folder", str(tmp_path / "images"),
                            DataConfig(), **start)
    assert getattr(failed.value, "exit_code", None) != errors.REFUSED and cleared == [True] and said == []
    cleared.clear()

    before = lifecycle.start_run(None, str(tmp_path / "examples"), "folder", str(tmp_path / "images"), DataConfig(),
                                 took_over={"run_id": "run-6", "why": "no heartbeat for 2 h"}, **start)
    assert cleared == [True] and before.ingest["span"] == 1
    assert said == [before.table, "took over the pipeline root from run run-6, whose lease was stale (no heartbeat "
                                  "for 2 h)"]


def test_the_summary_line_of_the_data_counts_the_images_carried_from_labeled_queues():
    ingest = {"span": 3, "reused": False, "files_seen": 48, "counts": {"accepted": 48},
              "carried": [{"span": 2, "examples": 10}, {"span": 1, "examples": 4}]}
    summary = _summary()
    lifecycle.complete_summary(summary, lifecycle.BeforeTheDag(ingest=ingest, table=""))
    assert "ingest: span 3: 48 files, accepted 48, carried from labeled queues 14" in summary.text()
    plain = _summary()
    lifecycle.complete_summary(plain, lifecycle.BeforeTheDag(ingest={**ingest, "carried": []}, table=""))
    assert "carried" not in plain.text()
