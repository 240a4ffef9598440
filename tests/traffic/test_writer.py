"""Traffic spans written by batch, committed by their report last: never half a span, a storage fault counted.
"""

import concurrent.futures
import errno
import logging
import math
import os
import posixpath

import pytest
import tensorflow as tf

from contract import storage
from contract.traffic import KEYS, KSERVE_ORIGIN, PREDICT_ORIGIN, REPORT_FILE
from tests.object_store import FakeObjectStore, Killed
from tests.traffic.written import BUCKET_ROOT, make_record
from traffic import spans as traffic_spans
from traffic import window as traffic_window
from traffic import writer as traffic_writer
from traffic.records import TrafficDataError, TrafficRecord
from traffic.writer import TrafficWriter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_records_round_trip_through_a_span_that_tensorflows_own_reader_reads(tmp_path):
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=5, max_seconds=60, records_per_file=2)
    writer.note_sampled_out(4)
    writer.note_refused("bad base64")
    spans = [writer.add(make_record(i, score=float("nan") if i == 1 else i / 10, version=-1 if i == 2 else 3))
             for i in range(5)]
    assert spans == [None, None, None, None, 1]
    assert traffic_spans.committed_spans(root) == [1]
    folder = posixpath.join(root, "span-1")
    assert sorted(os.listdir(folder)) == ["traffic-0.tfrecord", "traffic-1.tfrecord", "traffic-2.tfrecord",
                                          REPORT_FILE]
    report = traffic_spans.load_report(root, 1)
    assert (report.records, report.first_time_ms, report.last_time_ms) == (5, 1000, 1004)
    assert (report.model_versions, report.origins, report.sampled_out) == ([-1, 3], ["kserve"], 4)
    assert report.refused == {"bad base64": 1} and report.lost == {}

    window = traffic_window.read_window(root)
    assert window.images == [f"image-{i}".encode() for i in range(5)]
    assert math.isnan(window.scores[1]) and window.scores[3] == pytest.approx(0.3)
    assert window.versions.tolist() == [3, 3, -1, 3, 3] and window.times_ms.tolist() == list(range(1000, 1005))
    assert window.request_ids[4] == "req-4" and window.origins == ["kserve"] * 5 and window.spans == [1]
    assert window.sha256s[0] == __import__("hashlib").sha256(b"image-0").hexdigest()

    # The framing is TFRecord's own: TensorFlow reads the files, and the examples carry every contract key.
    files = sorted(tf.io.gfile.glob(posixpath.join(folder, "traffic-*.tfrecord")))
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]
    assert len(examples) == 5 and set(examples[0].features.feature) == set(KEYS)
    # The next batch's report starts its counts afresh.
    writer.add(make_record(5))
    assert writer.flush() == 2 and traffic_spans.load_report(root, 2).sampled_out == 0


def test_a_batch_is_published_once_its_oldest_record_waited_max_seconds(tmp_path):
    root, clock = str(tmp_path / "traffic"), Clock()
    writer = TrafficWriter(root, batch_size=100, max_seconds=10, clock=clock)
    assert writer.add(make_record(0)) is None
    clock.now = 9.9
    assert writer.flush_if_old() is None and traffic_spans.committed_spans(root) == []
    clock.now = 10.0
    assert writer.flush_if_old() == 1 and traffic_window.read_window(root).request_ids == ["req-0"]
    assert writer.flush_if_old() is None and writer.flush() is None  # nothing open: no empty span


def test_a_traffic_folder_that_is_a_link_is_never_written_cleaned_or_read_through(tmp_path):
    mine = tmp_path / "my-folder"
    (mine / ".traffic-mine").mkdir(parents=True)
    writer = TrafficWriter(str(tmp_path / "traffic"), batch_size=2, max_seconds=60)
    writer.add(make_record(0))
    (tmp_path / "traffic").symlink_to(mine)  # made a link while the writer's batch was open
    assert writer.add(make_record(1)) is None and writer.lost == {"storage error (NotADirectoryError)": 2}
    assert traffic_spans.remove_staging(str(tmp_path / "traffic")) == []
    with pytest.raises(TrafficDataError, match="is a symbolic link"):
        traffic_window.read_window(str(tmp_path / "traffic"))
    assert [p.name for p in mine.iterdir()] == [".traffic-mine"]


def test_records_are_staged_once_they_reach_file_bytes_whatever_their_count(tmp_path, monkeypatch):
    monkeypatch.setattr(traffic_writer, "FILE_BYTES", 1000)
    root = str(tmp_path / "traffic")
    writer = TrafficWriter(root, batch_size=100, max_seconds=60, records_per_file=256)
    big = [TrafficRecord(image=bytes([i]) * 600, score=0.5, version=3, time_ms=1_000 + i,
                         request_id=f"req-{i}", origin=KSERVE_ORIGIN) for i in range(5)]
    for record in big:
        writer.add(record)
    (staging,) = os.listdir(root)
    assert sorted(os.listdir(os.path.join(root, staging))) == ["traffic-0.tfrecord", "traffic-1.tfrecord"]
    assert writer.flush() == 1 and traffic_spans.load_report(root, 1).files == {f"traffic-{k}.tfrecord": n for k, n in
                                                                          enumerate([2, 2, 1])}
    assert traffic_window.read_window(root).images == [record.image for record in big]


def _publish_one(root: str, writer_id: int) -> list[int]:
    writer = TrafficWriter(root, batch_size=3, max_seconds=60)
    published = []
    for i in range(9):
        span = writer.add(TrafficRecord(b"x", 0.1, 1, i, f"w{writer_id}-{i}", PREDICT_ORIGIN))
        if span:
            published.append(span)
    assert not writer.lost, writer.last_error
    return published


def test_concurrent_writers_each_take_a_free_number_and_lose_nothing(tmp_path):
    root = str(tmp_path / "traffic")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # each its own writer, as separate sinks would be
        published = list(pool.map(_publish_one, [root] * 4, range(4)))
    numbers = sorted(n for spans in published for n in spans)
    assert numbers == list(range(1, 13)) and traffic_spans.committed_spans(root) == numbers
    assert sorted(traffic_window.read_window(root).request_ids) == sorted(f"w{w}-{i}" for w in range(4)
                                                                         for i in range(9))


def test_a_local_writer_whose_number_was_taken_during_its_rename_takes_the_next(tmp_path, monkeypatch):
    """Locally, tf.io.gfile.rename checks that the destination is absent and then calls rename(2): another
    writer's span renamed in between makes it fail with FailedPreconditionError ("Directory not empty", seen
    with four writers at once), not AlreadyExistsError."""
    root = str(tmp_path / "traffic")
    first = TrafficWriter(root, batch_size=1, max_seconds=60)
    real_rename = storage.backend.rename_folder
    raced = []

    def another_writer_first(source, destination):
        if not raced:
            raced.append(destination)
            assert first.add(make_record(0)) == 1  # publishes span-1 between the check and rename(2)
            raise tf.errors.FailedPreconditionError(None, None, f"{source}; Directory not empty")
        return real_rename(source, destination)

    second = TrafficWriter(root, batch_size=1, max_seconds=60)
    monkeypatch.setattr(storage.backend, "rename_folder", another_writer_first)
    assert second.add(make_record(1)) == 2 and raced and not second.lost, second.last_error
    monkeypatch.undo()
    assert sorted(traffic_window.read_window(root).request_ids) == ["req-0", "req-1"]


def test_a_writer_that_finds_its_number_taken_publishes_under_the_next(use_store):
    store = use_store(FakeObjectStore())
    writer = TrafficWriter(BUCKET_ROOT, batch_size=1, max_seconds=60)
    real = storage.publish
    taken = []

    def another_writer_first(staging, final, commit_file, commit):
        if not taken:  # another writer publishes span-1 between our listing and our rename
            taken.append(final)
            store.write(f"{BUCKET_ROOT}/span-1/{REPORT_FILE}", b'{"span": 1, "records": 0, "files": {}, '
                        b'"first_time_ms": null, "last_time_ms": null, "model_versions": [], "origins": []}')
        return real(staging, final, commit_file, commit)

    storage_publish = pytest.MonkeyPatch()
    storage_publish.setattr(storage, "publish", another_writer_first)
    try:
        assert writer.add(make_record(0)) == 2
    finally:
        storage_publish.undo()
    assert traffic_window.read_window(BUCKET_ROOT).request_ids == ["req-0"] and not writer.lost


def _write_batch() -> TrafficWriter:
    writer = TrafficWriter(BUCKET_ROOT, batch_size=5, max_seconds=60, records_per_file=2)
    for i in range(5):
        writer.add(make_record(i))
    return writer


def test_a_writer_killed_after_any_object_leaves_no_readable_partial_span_and_a_start_cleans_up(use_store):
    whole = use_store(FakeObjectStore())
    assert _write_batch().spans == [1]
    assert whole.changes > 8
    for budget in range(whole.changes):
        killed = use_store(FakeObjectStore(budget=budget))
        with pytest.raises(Killed):
            _write_batch()
        after = use_store(FakeObjectStore(killed.objects))
        committed = traffic_spans.committed_spans(BUCKET_ROOT)
        assert committed in ([], [1]), budget
        window = traffic_window.read_window(BUCKET_ROOT)
        assert len(window) in (0, 5), (budget, len(window))  # all of the batch or nothing
        removed = traffic_spans.remove_staging(BUCKET_ROOT)
        assert not any(name.startswith(".") for name in after.listdir(BUCKET_ROOT)) if after.isdir(
            BUCKET_ROOT) else True, (budget, removed)
        if committed == [1]:
            continue
        cut_short = after.isdir(f"{BUCKET_ROOT}/span-1")  # renamed into place, its report never written
        assert _write_batch().spans == [2 if cut_short else 1], budget
        assert len(traffic_window.read_window(BUCKET_ROOT)) == 5


class FullDisk(FakeObjectStore):
    def write(self, path, data):
        if path.endswith(".tfrecord"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        super().write(path, data)


def test_batches_lost_one_after_another_are_said_once_every_ten_seconds_with_how_many(use_store, caplog,
                                                                                       monkeypatch):
    """A full disk loses every batch: 43 lines in one second flooded the sink's log."""
    monkeypatch.setattr(traffic_writer.logger, "propagate", True)
    caplog.set_level(logging.WARNING, logger=traffic_writer.logger.name)
    use_store(FullDisk())
    now = [0.0]
    writer = TrafficWriter(BUCKET_ROOT, batch_size=100, max_seconds=60, records_per_file=1, clock=lambda: now[0])
    for i in range(5):
        writer.add(make_record(i))  # each fills a file: its write fails, and its batch is lost
    now[0] = traffic_writer.LOG_EVERY_SECONDS
    writer.add(make_record(5))
    lines = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert writer.lost == {"disk full": 6} and len(lines) == 2, lines
    assert lines[1].endswith("(and 4 more batch(es) lost so since the last line)")


def test_a_full_disk_loses_the_batch_counted_said_and_written_into_the_next_span(use_store, caplog, monkeypatch):
    monkeypatch.setattr(traffic_writer.logger, "propagate", True)  # whatever an earlier command made of the logs
    caplog.set_level(logging.WARNING, logger=traffic_writer.logger.name)
    store = use_store(FullDisk())
    writer = TrafficWriter(BUCKET_ROOT, batch_size=3, max_seconds=60, records_per_file=2)
    for i in range(2):  # the second fills a file: its write fails, and the batch so far is lost
        writer.add(make_record(i))
    assert writer.spans == [] and writer.lost == {"disk full": 2} and writer.open_records == 0
    assert "2 traffic record(s) lost: OSError" in writer.last_error and "traffic record(s) lost" in caplog.text
    assert not [name for name in store.objects if "/." in name], "the staging folder is removed"
    writer.add(make_record(2))
    use_store(FakeObjectStore(store.objects))  # space again
    assert writer.flush() == 1 and traffic_spans.load_report(BUCKET_ROOT, 1).lost == {"disk full": 2}
    assert traffic_window.read_window(BUCKET_ROOT).request_ids == ["req-2"]
    assert writer.stats() == {"recorded": 1, "open_batch": 0, "spans_published": 1, "lost": {"disk full": 2}}
