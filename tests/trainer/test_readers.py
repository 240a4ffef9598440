"""The Trainer's readers: examples from their TFRecord files, counted, sampled and read back as JPEG bytes."""

import numpy as np
import pytest
import tensorflow as tf

from config import TrainingConfig
from contract import features
from trainer import readers


def _write_examples(path, count):
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for index in range(count):
            feature = {features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg-%d" % index])),
                       features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 2]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_records_are_counted_and_their_image_bytes_read_in_order_across_files(tmp_path):
    _write_examples(tmp_path / "a.gz", 3)
    _write_examples(tmp_path / "b.gz", 2)
    pattern = [str(tmp_path / "*.gz")]
    assert readers.count_records(pattern) == 5
    assert readers.encoded_images(pattern, 4) == [b"jpeg-0", b"jpeg-1", b"jpeg-2", b"jpeg-0"]


def test_no_files_matching_is_named():
    with pytest.raises(FileNotFoundError, match="no transformed examples match"):
        readers.count_records(["/nonexistent/*.gz"])


def test_sample_pixels_draws_both_classes_from_a_class_sorted_set():
    labels = np.repeat([0.0, 1.0], 100)  # all cats, then all dogs, as a class-by-class listing writes them
    pixels = labels[:, None, None, None] * np.ones((200, 2, 2, 3))
    examples = tf.data.Dataset.from_tensor_slices((pixels.astype("uint8"), labels))
    sample = readers.sample_pixels(examples, 40, TrainingConfig(shuffle_buffer=200, seed=3))
    assert sample.shape == (40, 2, 2, 3) and sample.dtype == np.float32
    dogs = int(sample[:, 0, 0, 0].sum())
    assert 10 <= dogs <= 30
