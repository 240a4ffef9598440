"""The Trainer's readers: ingested examples from their TFRecord files as tf.data datasets.

The uint8 pixels and labels the phases train on (decoded once through the
Transform graph), their training and eval batches, a shuffled sample of them,
the raw JPEG bytes of the first examples and how many examples there are.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from config import TrainingConfig
from contract import features
from trainer import feature_cache


def _list_files(patterns: list[str]) -> list[str]:
    files = sorted({f for pattern in patterns for f in tf.io.gfile.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no transformed examples match {patterns}")
    return files


RAW_SPEC = {features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
            features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}


def count_records(file_patterns: list[str]) -> int:
    """Examples in these files, counted without decoding them."""
    files = _list_files(file_patterns)
    return feature_cache.count(tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(".gz")
                                                       else ""))


def encoded_images(file_patterns: list[str], count: int) -> list[bytes]:
    """The image bytes of the first `count` ingested examples."""
    files = _list_files(file_patterns)
    records = tf.data.TFRecordDataset(files, compression_type="GZIP" if files[0].endswith(".gz") else "")
    parsed = records.take(count).map(lambda record: tf.io.parse_single_example(
        record, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})[features.IMAGE_KEY])
    return list(parsed.as_numpy_iterator())


def pixels_and_labels(file_patterns: list[str], transform) -> tf.data.Dataset:
    """Unbatched (uint8 pixels, float label) pairs from ingested examples, compact enough to cache.

    `transform` maps a batch of raw features ({image, label}) to Transform's
    outputs: the Transform graph itself (the TFT layer). Transform does not
    materialize its output: decoding here, once, into the cache costs less than
    writing and reading back every pixel (README, Performance).
    """
    files = _list_files(file_patterns)
    compression = "GZIP" if files[0].endswith(".gz") else ""

    def decode(serialized):
        raw = tf.io.parse_example(serialized, RAW_SPEC)
        pixels = tf.cast(transform(raw)[features.PIXELS_KEY], tf.uint8)
        label = tf.cast(tf.reshape(raw[features.LABEL_KEY], [-1, 1]), tf.float32)
        return pixels, label

    return (tf.data.TFRecordDataset(files, compression_type=compression)
            .batch(64).map(tf.autograph.experimental.do_not_convert(decode), num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch())


def _to_float(pixels, label):
    return tf.cast(pixels, tf.float32), label


def training_batches(examples: tf.data.Dataset, config: TrainingConfig) -> tf.data.Dataset:
    return (examples.cache()
            .shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size).map(_to_float).prefetch(tf.data.AUTOTUNE))


def eval_batches(examples: tf.data.Dataset, config: TrainingConfig) -> tf.data.Dataset:
    return examples.cache().batch(config.batch_size).map(_to_float).prefetch(tf.data.AUTOTUNE)


def sample_pixels(examples: tf.data.Dataset, count: int, config: TrainingConfig) -> np.ndarray:
    """`count` training images drawn through the shuffle buffer: a span's files
    may hold one class after the other, and a plain prefix would then be one class."""
    batch = next(iter(examples.shuffle(config.shuffle_buffer, seed=config.seed).batch(count).take(1)))
    return batch[0].numpy().astype("float32")
