"""Traffic spans: written by batch, committed by their report last, read as windows; never half a span."""

import concurrent.futures
import errno
import json
import logging
import math
import os
import pathlib
import posixpath
import time

import pytest
import tensorflow as tf

from contract import layout, storage, traffic
from tests.object_store import FakeObjectStore, Killed

BUCKET_ROOT = "gs://bucket/pipeline/traffic"


def _record(i: int, score: float = 0.5, version: int = 3, request: str | None = None) -> traffic.TrafficRecord:
    return traffic.TrafficRecord(image=f"image-{i}".encode(), score=score, version=version, time_ms=1_000 + i,
                                 request_id=request or f"req-{i}", origin=traffic.KSERVE_ORIGIN)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_traffic_root_is_under_the_pipeline_root():
    assert layout.RunLayout("gs://b/root").traffic_root == "gs://b/root/traffic"


def test_records_round_trip_through_a_span_that_tensorflows_own_reader_reads(tmp_path):
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=5, max_seconds=60, records_per_file=2)
    writer.note_sampled_out(4)
    writer.note_refused("bad base64")
    spans = [writer.add(_record(i, score=float("nan") if i == 1 else i / 10, version=-1 if i == 2 else 3))
             for i in range(5)]
    assert spans == [None, None, None, None, 1]
    assert traffic.committed_spans(root) == [1]
    folder = posixpath.join(root, "span-1")
    assert sorted(os.listdir(folder)) == ["traffic-0.tfrecord", "traffic-1.tfrecord", "traffic-2.tfrecord",
                                          traffic.REPORT_FILE]
    report = traffic.load_report(root, 1)
    assert (report.records, report.first_time_ms, report.last_time_ms) == (5, 1000, 1004)
    assert (report.model_versions, report.origins, report.sampled_out) == ([-1, 3], ["kserve"], 4)
    assert report.refused == {"bad base64": 1} and report.lost == {}

    window = traffic.read_window(root)
    assert window.images == [f"image-{i}".encode() for i in range(5)]
    assert math.isnan(window.scores[1]) and window.scores[3] == pytest.approx(0.3)
    assert window.versions.tolist() == [3, 3, -1, 3, 3] and window.times_ms.tolist() == list(range(1000, 1005))
    assert window.request_ids[4] == "req-4" and window.origins == ["kserve"] * 5 and window.spans == [1]
    assert window.sha256s[0] == __import__("hashlib").sha256(b"image-0").hexdigest()

    # The framing is TFRecord's own: TensorFlow reads the files, and the examples carry every contract key.
    files = sorted(tf.io.gfile.glob(posixpath.join(folder, "traffic-*.tfrecord")))
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]
    assert len(examples) == 5 and set(examples[0].features.feature) == set(traffic.KEYS)
    # The next batch's report starts its counts afresh.
    writer.add(_record(5))
    assert writer.flush() == 2 and traffic.load_report(root, 2).sampled_out == 0


def test_a_batch_is_published_once_its_oldest_record_waited_max_seconds(tmp_path):
    root, clock = str(tmp_path / "traffic"), Clock()
    writer = traffic.TrafficWriter(root, batch_size=100, max_seconds=10, clock=clock)
    assert writer.add(_record(0)) is None
    clock.now = 9.9
    assert writer.flush_if_old() is None and traffic.committed_spans(root) == []
    clock.now = 10.0
    assert writer.flush_if_old() == 1 and traffic.read_window(root).request_ids == ["req-0"]
    assert writer.flush_if_old() is None and writer.flush() is None  # nothing open: no empty span


def test_a_span_without_its_report_or_with_a_file_missing_or_a_link_is_never_read(tmp_path):
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=2, max_seconds=60, records_per_file=1)
    for i in range(6):
        writer.add(_record(i))
    assert traffic.committed_spans(root) == [1, 2, 3]
    os.remove(posixpath.join(root, "span-1", traffic.REPORT_FILE))
    os.remove(posixpath.join(root, "span-2", "traffic-1.tfrecord"))
    os.symlink(tmp_path, posixpath.join(root, "span-3", "elsewhere"))
    assert "no traffic_report.json" in traffic.incomplete_reason(root, 1)
    assert "traffic-1.tfrecord" in traffic.incomplete_reason(root, 2)
    assert "symbolic link" in traffic.incomplete_reason(root, 3)
    assert traffic.committed_spans(root) == [] and len(traffic.read_window(root)) == 0
    writer.add(_record(6))
    assert writer.flush() == 4, "a number a reader may have listed is never reused"


def test_a_traffic_folder_that_is_a_link_is_never_written_cleaned_or_read_through(tmp_path):
    mine = tmp_path / "my-folder"
    (mine / ".traffic-mine").mkdir(parents=True)
    writer = traffic.TrafficWriter(str(tmp_path / "traffic"), batch_size=2, max_seconds=60)
    writer.add(_record(0))
    (tmp_path / "traffic").symlink_to(mine)  # made a link while the writer's batch was open
    assert writer.add(_record(1)) is None and writer.lost == {"storage error (NotADirectoryError)": 2}
    assert traffic.remove_staging(str(tmp_path / "traffic")) == []
    with pytest.raises(traffic.TrafficDataError, match="is a symbolic link"):
        traffic.read_window(str(tmp_path / "traffic"))
    assert [p.name for p in mine.iterdir()] == [".traffic-mine"]


def test_records_are_staged_once_they_reach_file_bytes_whatever_their_count(tmp_path, monkeypatch):
    monkeypatch.setattr(traffic, "FILE_BYTES", 1000)
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=100, max_seconds=60, records_per_file=256)
    big = [traffic.TrafficRecord(image=bytes([i]) * 600, score=0.5, version=3, time_ms=1_000 + i,
                                 request_id=f"req-{i}", origin=traffic.KSERVE_ORIGIN) for i in range(5)]
    for record in big:
        writer.add(record)
    (staging,) = os.listdir(root)
    assert sorted(os.listdir(os.path.join(root, staging))) == ["traffic-0.tfrecord", "traffic-1.tfrecord"]
    assert writer.flush() == 1 and traffic.load_report(root, 1).files == {f"traffic-{k}.tfrecord": n for k, n in
                                                                          enumerate([2, 2, 1])}
    assert traffic.read_window(root).images == [record.image for record in big]


def test_a_damaged_record_is_named_with_its_file(tmp_path):
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=2, max_seconds=60)
    writer.add(_record(0))
    writer.add(_record(1))
    path = posixpath.join(root, "span-1", "traffic-0.tfrecord")
    data = bytearray(open(path, "rb").read())
    data[-10] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(traffic.TrafficDataError, match=r"traffic-0.tfrecord: record 1 is damaged"):
        traffic.read_window(root)


def test_a_damaged_report_is_named(tmp_path):
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=1, max_seconds=60)
    writer.add(_record(0))
    path = posixpath.join(root, "span-1", traffic.REPORT_FILE)
    report = json.loads(open(path).read())
    for damage, said in (({"last_time_ms": "soon"}, "times are not whole numbers"), ({"files": []}, "files"),
                         ({"span": None}, "span"), ("not an object", "holds a string")):
        open(path, "w").write(json.dumps({**report, **damage} if isinstance(damage, dict) else damage))
        with pytest.raises(traffic.TrafficDataError, match=said) as raised:
            traffic.read_window(root)
        assert path in str(raised.value)


def test_a_window_is_the_newest_records_across_spans_oldest_first_and_reads_no_older_span(tmp_path, monkeypatch):
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=4, max_seconds=60)
    for i in range(12):  # spans 1, 2, 3 of 4 records each
        writer.add(_record(i))
    window = traffic.read_window(root, max_images=6)
    assert window.request_ids == [f"req-{i}" for i in range(6, 12)] and window.spans == [2, 3]
    assert traffic.read_window(root, since_ms=1009).request_ids == ["req-9", "req-10", "req-11"]
    assert traffic.read_window(root, max_images=2, since_ms=1003).request_ids == ["req-10", "req-11"]
    assert len(traffic.read_window(root, max_images=0)) == 0
    read = []
    real = traffic.read_span
    monkeypatch.setattr(traffic, "read_span", lambda r, span: read.append(span) or real(r, span))
    traffic.read_window(root, max_images=4)
    assert read == [3], "span 2 holds nothing newer than the 4 kept: not read"


def test_an_incomplete_span_is_moved_aside_after_the_grace_time_and_its_number_never_used_again(tmp_path):
    """A full disk after a span's rename leaves it without its report: never read, and at the sink's next start
    moved aside, not named again at every start."""
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=1, max_seconds=60)
    writer.add(_record(0))  # span 1
    writer.add(_record(1))  # span 2, then its report removed: as if the disk filled before it was written
    os.remove(os.path.join(root, "span-2", traffic.REPORT_FILE))
    old = time.time() - traffic.PUBLISH_GRACE_SECONDS - 60
    for path in [os.path.join(root, "span-2")] + [str(p) for p in pathlib.Path(root, "span-2").rglob("*")]:
        os.utime(path, (old, old))
    os.makedirs(os.path.join(root, "span-3"))  # incomplete too, but just now: perhaps a writer publishing it
    lines = traffic.move_incomplete_aside(root)
    assert len(lines) == 2 and "span-3 is no committed span yet" in lines[1] and "left as it is" in lines[1]
    assert "span-2 is no committed span (" in lines[0] and "its number is not used again" in lines[0]
    (moved,) = os.listdir(traffic.aside_dir(root))
    assert moved.startswith("span-2-") and sorted(os.listdir(root)) == ["span-1", "span-3"]
    os.rmdir(os.path.join(root, "span-3"))
    writer.add(_record(2))
    assert traffic.committed_spans(root) == [1, 3], "span 2's number stays used"
    assert traffic.move_incomplete_aside(root) == []


def test_a_window_is_chosen_by_time_when_span_numbers_and_times_disagree(tmp_path, monkeypatch):
    """A sender's clock or a second writer can give a later span older records: the newest images are kept."""
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=2, max_seconds=60)
    for i in (20, 21, 0, 1, 10, 11):  # span 1 the newest records, span 2 the oldest, span 3 between
        writer.add(_record(i))
    read = []
    real = traffic.read_span
    monkeypatch.setattr(traffic, "read_span", lambda r, span: read.append(span) or real(r, span))
    window = traffic.read_window(root, max_images=2)
    assert window.request_ids == ["req-20", "req-21"] and window.spans == [1]
    assert read == [1], "spans 3 and 2 hold nothing newer than the two kept: not read"
    assert traffic.read_window(root, max_images=3).request_ids == ["req-11", "req-20", "req-21"]


@pytest.mark.parametrize("change", ["other images", "fewer records", "a link", "no report"])
def test_a_span_changed_between_the_window_and_its_reread_stops_the_reread_naming_it(tmp_path, change):
    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=4, max_seconds=60)
    for i in range(8):  # spans 1 and 2
        writer.add(_record(i))
    window = traffic.read_window(root)
    span2 = traffic.span_dir(root, 2)
    if change == "a link":
        name = os.path.join(span2, sorted(traffic.load_report(root, 2).files)[0])
        os.rename(name, str(tmp_path / "moved"))
        os.symlink(str(tmp_path / "moved"), name)
    elif change == "no report":
        os.remove(os.path.join(span2, traffic.REPORT_FILE))
    else:  # removed and published again under its number
        storage.backend.rmtree(span2)
        # other images under the old record numbers, or the same first two images and the rest gone
        first, count = (100, 4) if change == "other images" else (4, 2)
        writer = traffic.TrafficWriter(root, batch_size=count, max_seconds=60)
        for i in range(first, first + count):
            writer.add(_record(i))
    what = {"other images": "record 0 is not the image it was", "fewer records": "2 of its records are gone",
            "a link": "symbolic link", "no report": "no traffic_report.json"}[change]
    with pytest.raises(traffic.TrafficDataError, match=rf"span-2 changed while monitor read it \(.*{what}.*\); run"):
        list(window.batches())


def test_reading_a_large_image_back_holds_it_about_once_not_with_its_file_and_record(tmp_path):
    import tracemalloc

    root = str(tmp_path / "traffic")
    writer = traffic.TrafficWriter(root, batch_size=10, max_seconds=60)
    size = 20 * 2**20
    writer.add(traffic.TrafficRecord(image=os.urandom(size), score=0.5, version=1, time_ms=1, request_id="big",
                                     origin=traffic.KSERVE_ORIGIN))
    writer.flush()
    window = traffic.read_window(root)
    tracemalloc.start()
    try:
        assert [len(image) for _, images in window.batches() for image in images] == [size]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * size, f"{peak / size:.1f} times the image's bytes held at once"


@pytest.mark.parametrize("damage", ["cut short", "no deflate stream", "not gzip"])
def test_a_damaged_gzip_file_is_named_in_one_error_like_a_damaged_plain_file(tmp_path, damage):
    import gzip

    plain = traffic.tfrecord_bytes([_record(i).serialized() for i in range(50)])
    whole = gzip.compress(plain)
    data = {"cut short": whole[:len(whole) // 2], "no deflate stream": b"\x1f\x8b" + os.urandom(100),
            "not gzip": plain}[damage]
    path = tmp_path / "part-0.gz"
    path.write_bytes(data)
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
        with pytest.raises(traffic.TrafficDataError, match=rf"^{path}: record \d+ cannot be read \(.+\)$"):
            list(traffic.read_tfrecords(stream, str(path)))


def _publish_one(root: str, writer_id: int) -> list[int]:
    writer = traffic.TrafficWriter(root, batch_size=3, max_seconds=60)
    published = []
    for i in range(9):
        span = writer.add(traffic.TrafficRecord(b"x", 0.1, 1, i, f"w{writer_id}-{i}", traffic.PREDICT_ORIGIN))
        if span:
            published.append(span)
    assert not writer.lost, writer.last_error
    return published


def test_concurrent_writers_each_take_a_free_number_and_lose_nothing(tmp_path):
    root = str(tmp_path / "traffic")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # each its own writer, as separate sinks would be
        published = list(pool.map(_publish_one, [root] * 4, range(4)))
    numbers = sorted(n for spans in published for n in spans)
    assert numbers == list(range(1, 13)) and traffic.committed_spans(root) == numbers
    assert sorted(traffic.read_window(root).request_ids) == sorted(f"w{w}-{i}" for w in range(4) for i in range(9))


def test_a_local_writer_whose_number_was_taken_during_its_rename_takes_the_next(tmp_path, monkeypatch):
    """Locally, tf.io.gfile.rename checks that the destination is absent and then calls rename(2): another
    writer's span renamed in between makes it fail with FailedPreconditionError ("Directory not empty", seen
    with four writers at once), not AlreadyExistsError."""
    root = str(tmp_path / "traffic")
    first = traffic.TrafficWriter(root, batch_size=1, max_seconds=60)
    real_rename = storage.backend.rename_folder
    raced = []

    def another_writer_first(source, destination):
        if not raced:
            raced.append(destination)
            assert first.add(_record(0)) == 1  # publishes span-1 between the check and rename(2)
            raise tf.errors.FailedPreconditionError(None, None, f"{source}; Directory not empty")
        return real_rename(source, destination)

    second = traffic.TrafficWriter(root, batch_size=1, max_seconds=60)
    monkeypatch.setattr(storage.backend, "rename_folder", another_writer_first)
    assert second.add(_record(1)) == 2 and raced and not second.lost, second.last_error
    monkeypatch.undo()
    assert sorted(traffic.read_window(root).request_ids) == ["req-0", "req-1"]


def test_a_writer_that_finds_its_number_taken_publishes_under_the_next(use_store):
    store = use_store(FakeObjectStore())
    writer = traffic.TrafficWriter(BUCKET_ROOT, batch_size=1, max_seconds=60)
    real = storage.publish
    taken = []

    def another_writer_first(staging, final, commit_file, commit):
        if not taken:  # another writer publishes span-1 between our listing and our rename
            taken.append(final)
            store.write(f"{BUCKET_ROOT}/span-1/{traffic.REPORT_FILE}", b'{"span": 1, "records": 0, "files": {}, '
                        b'"first_time_ms": null, "last_time_ms": null, "model_versions": [], "origins": []}')
        return real(staging, final, commit_file, commit)

    storage_publish = pytest.MonkeyPatch()
    storage_publish.setattr(storage, "publish", another_writer_first)
    try:
        assert writer.add(_record(0)) == 2
    finally:
        storage_publish.undo()
    assert traffic.read_window(BUCKET_ROOT).request_ids == ["req-0"] and not writer.lost


@pytest.fixture
def use_store(monkeypatch):
    def install(store: FakeObjectStore) -> FakeObjectStore:
        monkeypatch.setattr(storage, "backend", store)
        return store
    return install


def _write_batch() -> traffic.TrafficWriter:
    writer = traffic.TrafficWriter(BUCKET_ROOT, batch_size=5, max_seconds=60, records_per_file=2)
    for i in range(5):
        writer.add(_record(i))
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
        committed = traffic.committed_spans(BUCKET_ROOT)
        assert committed in ([], [1]), budget
        window = traffic.read_window(BUCKET_ROOT)
        assert len(window) in (0, 5), (budget, len(window))  # all of the batch or nothing
        removed = traffic.remove_staging(BUCKET_ROOT)
        assert not any(name.startswith(".") for name in after.listdir(BUCKET_ROOT)) if after.isdir(
            BUCKET_ROOT) else True, (budget, removed)
        if committed == [1]:
            continue
        cut_short = after.isdir(f"{BUCKET_ROOT}/span-1")  # renamed into place, its report never written
        assert _write_batch().spans == [2 if cut_short else 1], budget
        assert len(traffic.read_window(BUCKET_ROOT)) == 5


class FullDisk(FakeObjectStore):
    def write(self, path, data):
        if path.endswith(".tfrecord"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        super().write(path, data)


def test_a_full_disk_loses_the_batch_counted_said_and_written_into_the_next_span(use_store, caplog, monkeypatch):
    monkeypatch.setattr(traffic.logger, "propagate", True)  # whatever an earlier command made of the logs
    caplog.set_level(logging.WARNING, logger=traffic.logger.name)
    store = use_store(FullDisk())
    writer = traffic.TrafficWriter(BUCKET_ROOT, batch_size=3, max_seconds=60, records_per_file=2)
    for i in range(2):  # the second fills a file: its write fails, and the batch so far is lost
        writer.add(_record(i))
    assert writer.spans == [] and writer.lost == {"disk full": 2} and writer.open_records == 0
    assert "2 traffic record(s) lost: OSError" in writer.last_error and "traffic record(s) lost" in caplog.text
    assert not [name for name in store.objects if "/." in name], "the staging folder is removed"
    writer.add(_record(2))
    use_store(FakeObjectStore(store.objects))  # space again
    assert writer.flush() == 1 and traffic.load_report(BUCKET_ROOT, 1).lost == {"disk full": 2}
    assert traffic.read_window(BUCKET_ROOT).request_ids == ["req-2"]
    assert writer.stats() == {"recorded": 1, "open_batch": 0, "spans_published": 1, "lost": {"disk full": 2}}


def test_a_record_of_another_origin_is_refused():
    with pytest.raises(ValueError, match="origin"):
        traffic.TrafficRecord(b"x", 0.5, 1, 0, "r", "elsewhere")
