"""ingest's examples, written field by field, are the tf.Examples protocol buffers' own classes make."""

import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import features
from ingest.images import CheckedImage
from ingest.span_pipeline import make_example


def _by_protobuf(image: CheckedImage, label: int, relative: str) -> tf.train.Example:
    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes(image.jpeg), features.LABEL_KEY: _int(label),
        features.HEIGHT_KEY: _int(image.height), features.WIDTH_KEY: _int(image.width),
        features.SOURCE_KEY: _bytes(relative.encode()), features.SHA256_KEY: _bytes(image.sha256.encode())}))


# Lengths on each side of a varint's byte boundaries (127/128, 16,383/16,384, 2,097,151/2,097,152), where a length
# written one byte short or long would misplace every field after it.
_LENGTHS = st.sampled_from([0, 1, 100, 127, 128, 129, 16_255, 16_383, 16_384, 2_097_020, 2_097_151, 2_097_152]) | \
    st.integers(0, 300_000)


@settings(max_examples=60, deadline=None)
@given(length=_LENGTHS, fill=st.binary(min_size=1, max_size=64), label=st.integers(0, 1),
       height=st.integers(1, 2**31 - 1), width=st.integers(1, 2**31 - 1), relative=st.text(max_size=300),
       sha256=st.text("0123456789abcdef", min_size=64, max_size=64))
def test_an_example_parses_back_to_the_one_protocol_buffers_build(length, fill, label, height, width, relative,
                                                                   sha256):
    jpeg = (fill * (length // len(fill) + 1))[:length]
    image = CheckedImage(jpeg=jpeg, height=height, width=width, normalized=None, sha256=sha256)
    written = make_example(image, label, relative)
    assert tf.train.Example.FromString(written) == _by_protobuf(image, label, relative)


def test_tensorflow_parses_an_example_by_the_contracts_keys():
    image = CheckedImage(jpeg=b"\xff\xd8" + bytes(range(256)) * 60, height=375, width=500, normalized=None,
                         sha256="ab" * 32)
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            features.HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
            features.WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
            features.SOURCE_KEY: tf.io.FixedLenFeature([], tf.string),
            features.SHA256_KEY: tf.io.FixedLenFeature([], tf.string)}
    parsed = tf.io.parse_single_example(make_example(image, 1, "dogs/Ü 7.jpg"), spec)
    assert parsed[features.IMAGE_KEY].numpy() == image.jpeg
    assert (parsed[features.LABEL_KEY], parsed[features.HEIGHT_KEY], parsed[features.WIDTH_KEY]) == (1, 375, 500)
    assert parsed[features.SOURCE_KEY].numpy().decode() == "dogs/Ü 7.jpg"
    assert parsed[features.SHA256_KEY].numpy() == b"ab" * 32
