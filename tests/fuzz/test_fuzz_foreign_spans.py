"""The reader of spans other tools wrote, over random and mutated TFRecord files: every file ends in a list of
one-line problems naming the file and the record (empty for a good span); nothing else escapes."""

import pathlib
import tempfile

import tensorflow as tf
from hypothesis import event, given, settings
from hypothesis import strategies as st

from contract import layout
from ingest.foreign_spans import foreign_span_problems
from tests.fuzz.conftest import examples
from tests.fuzz.mutations import mutated
from tests.fuzz.seeds import image_seeds

IMAGES = image_seeds()


def _example(features: dict) -> bytes:
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _bytes(*values: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


RECORD_SEEDS = [
    _example({"image": _bytes(IMAGES[0]), "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}),
    _example({"image": _bytes(IMAGES[1]), "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))}),
    _example({"image": _bytes(IMAGES[0], IMAGES[2])}),
    _example({"image": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}),
    _example({"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))}),
]


def _tfrecord_file(records: list[bytes]) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / "part.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                writer.write(record)
        return path.read_bytes()


FILE_SEEDS = [_tfrecord_file(RECORD_SEEDS[:2]), _tfrecord_file(RECORD_SEEDS)]


@st.composite
def span_files(draw):
    """A file of mutated records (each record's framing intact), or a mutated file (its framing broken too)."""
    if draw(st.booleans()):
        return _tfrecord_file(draw(st.lists(mutated(RECORD_SEEDS), max_size=4)))
    return draw(mutated(FILE_SEEDS))


@settings(max_examples=examples(150))
@given(span_files(), st.sampled_from(["part-0.tfrecord", "part-0.tfrecord.gz"]))
def test_any_span_file_ends_in_one_line_problems_naming_file_and_record(data, name):
    with tempfile.TemporaryDirectory() as root:
        split = pathlib.Path(root) / layout.span_name(1) / layout.TRAIN_SPLIT
        split.mkdir(parents=True)
        (split / name).write_bytes(data)
        problems = foreign_span_problems(root, 1, max_pixels=2_000_000)
    assert isinstance(problems, list)
    for problem in problems:
        assert "\n" not in problem and problem.startswith(f"{layout.span_name(1)}/{layout.TRAIN_SPLIT}/{name}")
        event(problem.split(": ", 1)[-1].split(" (")[0][:60])
    if not problems:
        event("no problem")
