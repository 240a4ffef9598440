"""The labeling queue: published whole, sorted by a person, ingested as the next span with what is left unsorted
reported, never ingested."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from contract import layout, storage
from ingest import sources, span_report, spans
from monitoring import looks, queue


@pytest.fixture(scope="module")
def window_images():
    cartoon = looks.images("cartoon", 6)
    return cartoon + [cartoon[0]] + looks.images("sketch", 2)  # one image sent twice


def test_a_queue_is_published_whole_with_empty_class_folders_a_count_and_a_sheet(tmp_path, window_images):
    scores = np.linspace(0, 1, len(window_images))
    folder, count = queue.export(str(tmp_path / "labeling"), window_images, scores,
                                 {"served_version": 3, "moved": ["features"], "report": "r/index.html"})
    assert folder == str(tmp_path / "labeling" / "queue-1") and count == 8  # the duplicate once
    assert sorted(os.listdir(folder)) == sorted([layout.QUEUE_RECORD, layout.QUEUE_README, layout.CONTACT_SHEET,
                                                 layout.QUEUE_UNSORTED, "cat", "dog"])
    assert os.listdir(os.path.join(folder, "cat")) == os.listdir(os.path.join(folder, "dog")) == []
    assert len(os.listdir(os.path.join(folder, layout.QUEUE_UNSORTED))) == 8
    record = json.loads(open(os.path.join(folder, layout.QUEUE_RECORD)).read())
    assert record["images"] == 8 and record["served_version"] == 3 and record["moved"] == ["features"]
    readme = open(os.path.join(folder, layout.QUEUE_README)).read()
    assert f"ingest --data-dir {folder} --output-dir {tmp_path}" in readme and "version 3" in readme
    assert os.listdir(tmp_path / "labeling") == ["queue-1"]  # no staging folder left
    second, count = queue.export(str(tmp_path / "labeling"), window_images[:2] + looks.images("dusk", 1), None, {})
    assert second.endswith("queue-2") and count == 1  # the two queued already are not queued again


def test_a_window_checked_again_queues_only_the_images_no_earlier_queue_holds(tmp_path, window_images):
    """A scheduled check whose window overlaps the last one's (the newest N images, hour after hour) would
    otherwise queue the same images for labels every time; a queue a person sorted still counts."""
    labeling = tmp_path / "labeling"
    first, _ = queue.export(str(labeling), window_images, None, {})
    unsorted = os.path.join(first, layout.QUEUE_UNSORTED)
    for name in sorted(os.listdir(unsorted))[:3]:
        os.rename(os.path.join(unsorted, name), os.path.join(first, "cat", name))
    stale = labeling / ".queue-0123456789abcdef0123456789abcdef"  # a check killed while it staged its queue
    (stale / layout.QUEUE_UNSORTED).mkdir(parents=True)
    for mine in (".queue-notes", ".queue-0123456789abcdef"):  # a person's folders that share the prefix
        (labeling / mine).mkdir()
        (labeling / mine / "keep.txt").write_text("mine")
    assert queue.export(str(labeling), list(reversed(window_images)), None, {}) == (None, 0)
    assert sorted(os.listdir(labeling)) == [".queue-0123456789abcdef", ".queue-notes", "queue-1"]
    assert (labeling / ".queue-notes" / "keep.txt").read_text() == "mine"
    folder, count = queue.export(str(labeling), looks.images("print", 2) + window_images, None, {})
    assert folder.endswith("queue-2") and count == 2


def test_a_queue_whose_write_fails_leaves_nothing_a_person_could_take_for_one(tmp_path, window_images, monkeypatch):
    real_write = storage.backend.write

    def failing(path, data):
        if path.endswith(layout.CONTACT_SHEET):
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(storage.backend, "write", failing)
    with pytest.raises(OSError):
        queue.export(str(tmp_path / "labeling"), window_images, None, {})
    assert os.listdir(tmp_path / "labeling") == []


def test_a_sorted_queue_is_ingested_as_the_next_span_and_what_is_left_unsorted_is_reported(tmp_path, window_images):
    folder, _ = queue.export(str(tmp_path / "labeling"), window_images, None, {})
    unsorted = sorted(os.listdir(os.path.join(folder, layout.QUEUE_UNSORTED)))
    for name, label in zip(unsorted[:4], ["cat", "dog", "cat", "dog"]):  # a person sorts four of eight
        shutil.move(os.path.join(folder, layout.QUEUE_UNSORTED, name), os.path.join(folder, label, name))
    for where in ("cat", layout.QUEUE_UNSORTED):  # sorted in Finder
        with open(os.path.join(folder, where, ".DS_Store"), "wb") as f:
            f.write(b"\x00\x00\x00\x01Bud1")
    report = spans.ingest("folder", folder, tmp_path / "examples")
    assert report.span == 1 and report.examples_written == 4
    assert report.examples_per_label == {"cat": 2, "dog": 2}
    left = {entry["file"]: entry["reason"] for entry in report.quarantined}
    assert sorted(left) == [f"{layout.QUEUE_UNSORTED}/{name}" for name in unsorted[4:]]
    assert all(reason.startswith("not sorted: move it into cat/ or dog/") for reason in left.values())
    # the queue's own files are no images of it: neither ingested nor reported
    assert report.files_seen == 8
    assert report.passed_over == ["cat/.DS_Store", f"{layout.QUEUE_UNSORTED}/.DS_Store"]
    table = report.table(max_listed=2, written_to="span-1/ingest_report.json").splitlines()
    assert table[2:7] == ["  accepted             4", "  normalized           0", "  duplicate            0",
                          "  quarantined          0",
                          f"  not sorted           4  left in {layout.QUEUE_UNSORTED}/: move one into cat/ or dog/ of "
                          "the queue to ingest it"], "the images a person left are counted apart, not listed one by one"
    assert not [line for line in table if line.startswith(f"  quarantined {layout.QUEUE_UNSORTED}")
                or "more quarantined" in line]
    assert table[-1] == "  each image not sorted is listed in span-1/ingest_report.json"
    assert "  passed over 2 file(s) the operating system keeps (.DS_Store): not photos, not read (each listed in " \
        "span-1/ingest_report.json)" in table


def test_images_left_in_a_folder_of_a_queue_are_counted_under_that_folders_name(tmp_path, window_images):
    folder, _ = queue.export(str(tmp_path / "labeling"), window_images[:4], None, {})
    names = sorted(os.listdir(os.path.join(folder, layout.QUEUE_UNSORTED)))
    odd = os.path.join(folder, "odd (left in x)")
    os.mkdir(odd)
    for name, where in zip(names, ["cat", "dog", odd, odd]):
        shutil.move(os.path.join(folder, layout.QUEUE_UNSORTED, name), os.path.join(folder, where, name))
    (pathlib.Path(folder) / "broken.jpg").write_bytes(b"")  # left in the queue's top folder, also not sorted
    table = spans.ingest("folder", folder, tmp_path / "examples").table().splitlines()
    assert [line for line in table if line.startswith("  not sorted")] == [
        "  not sorted           3  left in the queue's top folder (1), odd (left in x)/ (2): move one into cat/ or "
        "dog/ of the queue to ingest it"]


def test_in_a_queue_a_cat_named_file_left_unsorted_is_not_labelled_by_its_name(tmp_path, window_images):
    folder, _ = queue.export(str(tmp_path / "labeling"), window_images[:2], None, {})
    first = sorted(os.listdir(os.path.join(folder, layout.QUEUE_UNSORTED)))[0]
    os.rename(os.path.join(folder, layout.QUEUE_UNSORTED, first), os.path.join(folder, "cat.1.jpg"))
    shutil.move(os.path.join(folder, layout.QUEUE_UNSORTED), os.path.join(folder, "dog", "more"))
    report = spans.ingest("folder", folder, tmp_path / "examples")
    assert report.examples_per_label == {"cat": 0, "dog": 1}
    assert [entry["file"] for entry in report.quarantined] == ["cat.1.jpg"]


def test_the_contact_sheet_keeps_thumbnails_not_the_images_while_the_queue_is_written(tmp_path):
    import io
    import tracemalloc

    from PIL import Image

    picture = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(picture).save(out, "JPEG", quality=95)
    base = out.getvalue()

    def batches():  # one image a batch, each distinct (bytes after the JPEG's end are ignored by decoders)
        for i in range(queue.SHEET_IMAGES + 10):
            yield [i], [base + i.to_bytes(4, "big")]

    tracemalloc.start()
    try:
        folder, count = queue.export_batches(str(tmp_path / "labeling"), batches(), None, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == queue.SHEET_IMAGES + 10 and os.path.exists(os.path.join(folder, layout.CONTACT_SHEET))
    assert peak < 15 * len(base), f"{peak / len(base):.0f} images' bytes held at once ({len(base)} bytes each)"


def test_the_run_summary_counts_a_queues_unsorted_images_apart_from_the_quarantined():
    report = {"counts": {"accepted": 4, "normalized": 1, "duplicate": 0, "quarantined": 3},
              "quarantined": [{"file": "unsorted/a.jpg", "reason": sources.NOT_SORTED.format(where="unsorted/")},
                              {"file": "unsorted/b.jpg", "reason": sources.NOT_SORTED.format(where="unsorted/")},
                              {"file": "cat/c.jpg", "reason": "empty file"}]}
    assert span_report.shown_counts(report) == {"accepted": 4, "normalized": 1, "duplicate": 0, "quarantined": 1,
                                                "not sorted": 2}
    assert span_report.shown_counts(report | {"quarantined": report["quarantined"][2:]}) == report["counts"]
