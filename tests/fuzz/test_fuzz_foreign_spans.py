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


def _tfrecord_file(records: list[bytes], compression: str = "") -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        path = pathlib.Path(scratch) / "part.tfrecord"
        with tf.io.TFRecordWriter(str(path), compression) as writer:
            for record in records:
                writer.write(record)
        return path.read_bytes()


PLAIN, GZIP = "part-0.tfrecord", "part-0.tfrecord.gz"
COMPRESSION = {PLAIN: "", GZIP: "GZIP"}
FILE_SEEDS = {name: [_tfrecord_file(RECORD_SEEDS[:2], compression), _tfrecord_file(RECORD_SEEDS, compression)]
              for name, compression in COMPRESSION.items()}
GZIP_MAGIC = b"\x1f\x8b"


@st.composite
def span_files(draw):
    """(name, bytes, framing intact): a file of mutated records (each record's framing intact, and under a .gz
    name gzip-compressed whole), or a mutated file (its framing, and its gzip stream, broken too)."""
    name = draw(st.sampled_from([PLAIN, GZIP]))
    if draw(st.booleans()):
        return name, _tfrecord_file(draw(st.lists(mutated(RECORD_SEEDS), max_size=4)), COMPRESSION[name]), True
    return name, draw(mutated(FILE_SEEDS[name])), False


def _problems(name: str, data: bytes) -> list[str]:
    with tempfile.TemporaryDirectory() as root:
        split = pathlib.Path(root) / layout.span_name(1) / layout.TRAIN_SPLIT
        split.mkdir(parents=True)
        (split / name).write_bytes(data)
        return foreign_span_problems(root, 1, max_pixels=2_000_000)


def test_the_gzip_seeds_are_gzip_compressed_tfrecords_read_whole():
    for data in FILE_SEEDS[GZIP]:
        assert data.startswith(GZIP_MAGIC)
        with tempfile.TemporaryDirectory() as scratch:
            path = pathlib.Path(scratch) / GZIP
            path.write_bytes(data)
            assert len(list(tf.data.TFRecordDataset(str(path), compression_type="GZIP"))) in (2, len(RECORD_SEEDS))
    assert _problems(GZIP, FILE_SEEDS[GZIP][0]) == []  # two good records
    assert "not a readable TFRecord" in _problems(GZIP, FILE_SEEDS[PLAIN][0])[0]  # not gzip under a .gz name


@settings(max_examples=examples(150))
@given(span_files())
def test_any_span_file_ends_in_one_line_problems_naming_file_and_record(span_file):
    name, data, framing_intact = span_file
    problems = _problems(name, data)
    assert isinstance(problems, list)
    for problem in problems:
        assert "\n" not in problem and problem.startswith(f"{layout.span_name(1)}/{layout.TRAIN_SPLIT}/{name}")
        # records written whole, plain or gzip-compressed, always read: what is wrong is in a record
        assert not (framing_intact and "not a readable TFRecord" in problem), problem
        event(f"{'gzip' if name == GZIP else 'plain'}: " + problem.split(": ", 1)[-1].split(" (")[0][:60])
    if not problems:
        event("no problem")
