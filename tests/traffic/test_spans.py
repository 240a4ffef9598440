"""Committed traffic spans: a span without its report, with a file missing or a link is never read; one left
incomplete is moved aside and its number never used again.
"""

import json
import os
import pathlib
import posixpath
import time

import pytest

from contract import layout
from contract.traffic import REPORT_FILE
from tests.traffic.written import make_record
from traffic import spans as traffic_spans
from traffic import window as traffic_window
from traffic.records import TrafficDataError
from traffic.writer import TrafficWriter


def test_the_traffic_root_is_under_the_pipeline_root():
    assert layout.RunLayout("gs://b/root").traffic_root == "gs://b/root/traffic"


def test_a_span_without_its_report_or_with_a_file_missing_or_a_link_is_never_read(tmp_path):
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=2, max_seconds=60, records_per_file=1)
    for i in range(6):
        writer.add(make_record(i))
    assert traffic_spans.committed_spans(root) == [1, 2, 3]
    os.remove(posixpath.join(root, "span-1", REPORT_FILE))
    os.remove(posixpath.join(root, "span-2", "traffic-1.tfrecord"))
    os.symlink(tmp_path, posixpath.join(root, "span-3", "elsewhere"))
    assert "no traffic_report.json" in traffic_spans.incomplete_reason(root, 1)
    assert "traffic-1.tfrecord" in traffic_spans.incomplete_reason(root, 2)
    assert "symbolic link" in traffic_spans.incomplete_reason(root, 3)
    assert traffic_spans.committed_spans(root) == [] and len(traffic_window.read_window(root)) == 0
    writer.add(make_record(6))
    assert writer.flush() == 4, "a number a reader may have listed is never reused"


def test_a_damaged_report_is_named(tmp_path):
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=1, max_seconds=60)
    writer.add(make_record(0))
    path = posixpath.join(root, "span-1", REPORT_FILE)
    report = json.loads(open(path).read())
    for damage, said in (({"last_time_ms": "soon"}, "times are not whole numbers"), ({"files": []}, "files"),
                         ({"span": None}, "span"), ("not an object", "holds a string")):
        open(path, "w").write(json.dumps({**report, **damage} if isinstance(damage, dict) else damage))
        with pytest.raises(TrafficDataError, match=said) as raised:
            traffic_window.read_window(root)
        assert path in str(raised.value)


def test_an_incomplete_span_is_moved_aside_after_the_grace_time_and_its_number_never_used_again(tmp_path):
    """A full disk after a span's rename leaves it without its report: never read, and at the sink's next start
    moved aside, not named again at every start."""
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=1, max_seconds=60)
    writer.add(make_record(0))  # span 1
    writer.add(make_record(1))  # span 2, then its report removed: as if the disk filled before it was written
    os.remove(os.path.join(root, "span-2", REPORT_FILE))
    old = time.time() - traffic_spans.PUBLISH_GRACE_SECONDS - 60
    for path in [os.path.join(root, "span-2")] + [str(p) for p in pathlib.Path(root, "span-2").rglob("*")]:
        os.utime(path, (old, old))
    os.makedirs(os.path.join(root, "span-3"))  # incomplete too, but just now: perhaps a writer publishing it
    lines = traffic_spans.move_incomplete_aside(root)
    assert len(lines) == 2 and "span-3 is no committed span yet" in lines[1] and "left as it is" in lines[1]
    assert "span-2 is no committed span (" in lines[0] and "its number is not used again" in lines[0]
    (moved,) = os.listdir(traffic_spans.aside_dir(root))
    assert moved.startswith("span-2-") and sorted(os.listdir(root)) == ["span-1", "span-3"]
    os.rmdir(os.path.join(root, "span-3"))
    writer.add(make_record(2))
    assert traffic_spans.committed_spans(root) == [1, 3], "span 2's number stays used"
    assert traffic_spans.move_incomplete_aside(root) == []
