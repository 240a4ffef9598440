"""Windows of traffic: the newest records across spans, chosen by time, read again a batch at a time, a span
changed in between named.
"""

import os
import posixpath

import pytest

from contract import storage
from contract.traffic import KSERVE_ORIGIN, REPORT_FILE
from tests.traffic.written import make_record
from traffic import spans as traffic_spans
from traffic import window as traffic_window
from traffic.records import TrafficDataError, TrafficRecord
from traffic.writer import TrafficWriter


def test_a_damaged_record_is_named_with_its_file(tmp_path):
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=2, max_seconds=60)
    writer.add(make_record(0))
    writer.add(make_record(1))
    path = posixpath.join(root, "span-1", "traffic-0.tfrecord")
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(TrafficDataError, match=r"traffic-0.tfrecord: record 1 is damaged"):
        traffic_window.read_window(root)


def test_a_window_is_the_newest_records_across_spans_oldest_first_and_reads_no_older_span(tmp_path, monkeypatch):
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=4, max_seconds=60)
    for i in range(12):  # spans 1, 2, 3 of 4 records each
        writer.add(make_record(i))
    window = traffic_window.read_window(root, max_images=6)
    assert window.request_ids == [f"req-{i}" for i in range(6, 12)] and window.spans == [2, 3]
    assert traffic_window.read_window(root, since_ms=1009).request_ids == ["req-9", "req-10", "req-11"]
    assert traffic_window.read_window(root, max_images=2, since_ms=1003).request_ids == ["req-10", "req-11"]
    assert len(traffic_window.read_window(root, max_images=0)) == 0
    read = []
    real = traffic_window.read_span
    monkeypatch.setattr(traffic_window, "read_span", lambda r, span: read.append(span) or real(r, span))
    traffic_window.read_window(root, max_images=4)
    assert read == [3], "span 2 holds nothing newer than the 4 kept: not read"


def test_a_window_is_chosen_by_time_when_span_numbers_and_times_disagree(tmp_path, monkeypatch):
    """A sender's clock or a second writer can give a later span older records: the newest images are kept."""
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=2, max_seconds=60)
    for i in (20, 21, 0, 1, 10, 11):  # span 1 the newest records, span 2 the oldest, span 3 between
        writer.add(make_record(i))
    read = []
    real = traffic_window.read_span
    monkeypatch.setattr(traffic_window, "read_span", lambda r, span: read.append(span) or real(r, span))
    window = traffic_window.read_window(root, max_images=2)
    assert window.request_ids == ["req-20", "req-21"] and window.spans == [1]
    assert read == [1], "spans 3 and 2 hold nothing newer than the two kept: not read"
    assert traffic_window.read_window(root, max_images=3).request_ids == ["req-11", "req-20", "req-21"]


@pytest.mark.parametrize("change", ["other images", "fewer records", "a link", "no report"])
def test_a_span_changed_between_the_window_and_its_reread_stops_the_reread_naming_it(tmp_path, change):
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=4, max_seconds=60)
    for i in range(8):  # spans 1 and 2
        writer.add(make_record(i))
    window = traffic_window.read_window(root)
    span2 = traffic_spans.span_dir(root, 2)
    if change == "a link":
        name = os.path.join(span2, sorted(traffic_spans.load_report(root, 2).files)[0])
        os.rename(name, str(tmp_path / "moved"))
        os.symlink(str(tmp_path / "moved"), name)
    elif change == "no report":
        os.remove(os.path.join(span2, REPORT_FILE))
    else:  # removed and published again under its number
        storage.backend.rmtree(span2)
        # other images under the old record numbers, or the same first two images and the rest gone
        first, count = (100, 4) if change == "other images" else (4, 2)
        writer = TrafficWriter(root, batch_size=count, max_seconds=60)
        for i in range(first, first + count):
            writer.add(make_record(i))
    what = {"other images": "record 0 is not the image it was", "fewer records": "2 of its records are gone",
            "a link": "symbolic link", "no report": "no traffic_report.json"}[change]
    with pytest.raises(TrafficDataError, match=rf"span-2 changed while monitor read it \(.*{what}.*\); run"):
        list(window.batches())


def test_reading_a_large_image_back_holds_it_about_once_not_with_its_file_and_record(tmp_path):
    import tracemalloc

    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=10, max_seconds=60)
    size = 20 * 2**20
    writer.add(TrafficRecord(image=os.urandom(size), score=0.5, version=1, time_ms=1, request_id="big",
                             origin=KSERVE_ORIGIN))
    writer.flush()
    window = traffic_window.read_window(root)
    tracemalloc.start()
    try:
        assert [len(image) for _, images in window.batches() for image in images] == [size]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * size, f"{peak / size:.1f} times the image's bytes held at once"
