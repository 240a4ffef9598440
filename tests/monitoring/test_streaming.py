"""monitor reads its window a batch at a time: what a batch holds is bounded, every image comes once, and what is
measured and queued is what measuring the whole window in memory gives."""

import hashlib
import math
import os

import numpy as np
import pytest

from contract import layout
from contract.traffic import PREDICT_ORIGIN
from monitoring import looks, measure, monitor, queue
from monitoring.settings import MonitorSettings
from tests.helpers import CHEAP_BASE
from traffic import window as traffic_window
from traffic.records import TrafficRecord
from traffic.writer import TrafficWriter

SIZE = 32


@pytest.fixture(scope="module")
def window_root(tmp_path_factory):
    """Three spans whose request times interleave (a record's place in the window is not its place in storage),
    with two images no decoder reads and one sent twice."""
    root = str(tmp_path_factory.mktemp("traffic") / "traffic")
    images = looks.images("cartoon", 14) + looks.images("sketch", 6)
    images[3], images[11] = b"not an image", b"\xff\xd8\xff cut short"
    images[17] = images[5]
    times = [(2 - index % 3) * 1_000 + index for index in range(len(images))]  # the first span written is the newest
    for span in range(3):
        writer = TrafficWriter(root, batch_size=1000, max_seconds=3600, records_per_file=3)
        for index in range(span, len(images), 3):
            writer.add(TrafficRecord(images[index], index / 20, 1, times[index], f"request-{index}",
                                     PREDICT_ORIGIN))
        writer.flush()
    return root


def test_a_window_holds_no_image_and_its_batches_give_each_once_within_their_bounds(window_root, monkeypatch):
    window = traffic_window.read_window(window_root, max_images=18)
    assert len(window) == 18 and not any(isinstance(value, bytes) for value in vars(window).values()
                                         if not isinstance(value, (list, np.ndarray)))
    assert all(not isinstance(item, bytes) for value in vars(window).values() if isinstance(value, list)
               for item in value), "the window keeps figures, never images"
    assert list(window.times_ms) == sorted(window.times_ms)
    spans_read = []
    real = traffic_window.read_span
    monkeypatch.setattr(traffic_window, "read_span", lambda root, span: spans_read.append(span) or real(root, span))
    batches = window.batches(size=4, max_bytes=5_000)
    first = next(batches)
    assert spans_read == [1], "the first batch is read from the first span alone"
    given = [first, *batches]
    largest = max(map(len, window.images))
    for positions, images in given:
        assert len(positions) == len(images) <= 4
        assert sum(map(len, images)) <= 5_000 or len(images) == 1, "a batch holds one image beyond max_bytes"
        assert sum(map(len, images)) <= 5_000 + largest
    positions = [position for numbers, _ in given for position in numbers]
    assert sorted(positions) == list(range(18)) and positions != sorted(positions), "each once, in storage order"
    by_id = {window.request_ids[p]: image for numbers, images in given for p, image in zip(numbers, images)}
    assert all(hashlib.sha256(image).hexdigest() == window.sha256s[window.request_ids.index(request)]
               for request, image in by_id.items()), "each image at its own position"


def _old_measure_window(images, embedder, settings):
    """What monitor measured when it held the window's images: all of them, measured in one list."""
    sizes = measure.sizes(images)
    chosen = measure.sample(len(images), settings.sample, settings.seed)
    jpegs, refused = measure.checked([images[i] for i in chosen], chosen)
    named = {line.split(":")[0] for line in refused}  # an image named once, for its first fault
    unreadable = refused + [line for line in sizes.unreadable if line.split(":")[0] not in named]
    return {**sizes.values, **embedder.measure(jpegs).values}, unreadable, len(jpegs)


@pytest.fixture(scope="module")
def embedder():
    from config import TrainingConfig
    from trainer import model as model_lib

    config = TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE, seed=1)
    return measure.Embedder(model_lib.build_classifier(config, SIZE))


@pytest.mark.parametrize("sample", [12, 1000])
def test_measuring_a_streamed_window_gives_what_measuring_it_in_memory_gives(window_root, embedder, sample):
    window = traffic_window.read_window(window_root)
    settings = MonitorSettings(sample=sample, seed=4)
    streamed = monitor.measure_window(len(window), window.batches(size=5), embedder, settings)
    held = _old_measure_window(window.images, embedder, settings)
    assert streamed[1] == held[1] and streamed[2] == held[2]
    assert held[1], "the window holds images that cannot be measured"
    assert set(streamed[0]) == set(held[0])
    for name in (measure.HEIGHT, measure.WIDTH):  # read from each image's header: integers, the same on any CPU
        np.testing.assert_array_equal(streamed[0][name], held[0][name], err_msg=name)
    for name in measure.SEEN:
        _assert_same_float32_figures(streamed[0][name], held[0][name], name)


def _assert_same_float32_figures(streamed, held, name):
    """The window's images reach the classifier in other batches when streamed, and oneDNN picks its convolution
    kernels by batch shape and CPU (on AMD EPYC, batches of 5 and of 12 differed in the last bits; on Intel not):
    float32 sums taken in another order differ by a few units in the last place of the largest terms. So the
    figures are equal within float32's rounding of the array's scale, and each one stays at its image's place."""
    assert streamed.shape == held.shape, name
    scale = float(np.abs(held).max()) if held.size else 0.0
    np.testing.assert_allclose(streamed, held, rtol=1e-5, atol=1e-6 * scale, err_msg=name)


def test_a_queue_written_from_batches_is_the_queue_of_the_window_in_memory(window_root, tmp_path):
    window = traffic_window.read_window(window_root)
    record = {"served_version": 1, "moved": ["features"], "report": "r"}
    streamed, count = queue.export_batches(str(tmp_path / "a"), window.batches(size=3), window.scores, record)
    held, held_count = queue.export(str(tmp_path / "b"), window.images, window.scores, record)
    assert count == held_count == len(window) - 1, "the image sent twice is queued once"
    unsorted = layout.QUEUE_UNSORTED
    assert sorted(os.listdir(os.path.join(streamed, unsorted))) == sorted(os.listdir(os.path.join(held, unsorted)))
    sheet = layout.CONTACT_SHEET
    with open(os.path.join(streamed, sheet), "rb") as a, open(os.path.join(held, sheet), "rb") as b:
        assert a.read() == b.read(), "the sheet shows the window's first images, whatever order they were read in"
    assert not math.isnan(window.scores[0])


def _held_out_example(index: int) -> bytes:
    import tensorflow as tf

    from contract import features

    example = tf.train.Example()
    example.features.feature[features.IMAGE_KEY].bytes_list.value.append(b"jpeg %d" % index)
    example.features.feature[features.HEIGHT_KEY].int64_list.value.append(100 + index)
    example.features.feature[features.WIDTH_KEY].int64_list.value.append(200 + index)
    return example.SerializeToString()


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_the_reference_is_read_one_record_at_a_time_through_storage_from_gzip_files(tmp_path, monkeypatch, where):
    import tensorflow as tf

    from contract import storage
    from monitoring import reference
    from tests.object_store import FakeObjectStore

    local = tmp_path / "examples"
    for split, first in zip(reference.HELD_OUT, (0, 10)):
        folder = local / "span-2" / split
        folder.mkdir(parents=True)
        with tf.io.TFRecordWriter(str(folder / "data-00000.gz"), options="GZIP") as writer:
            for index in range(first, first + 4):
                writer.write(_held_out_example(index))
    root = str(local)
    if where == "bucket":
        root = "gs://bucket/cats/examples"
        monkeypatch.setattr(storage, "backend", FakeObjectStore({
            f"{root}/{path.relative_to(local).as_posix()}": path.read_bytes() for path in local.rglob("*.gz")}))
    found = reference.held_out_images(root, [2], limit=6)
    assert next(found) == (b"jpeg 0", 100, 200)
    assert list(found) == [(b"jpeg %d" % i, 100 + i, 200 + i) for i in (1, 2, 3, 10, 11)]
