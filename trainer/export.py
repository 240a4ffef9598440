"""The serving SavedModel: raw image bytes in, dog probability and class out.

Both signatures run the Transform graph (the TFT layer) and then the Keras
model, so serving decodes and resizes exactly as training did:
- `serving_default`: `image_bytes` (a batch of encoded images) -> `dog_probability`, `class_name`, `valid` and
  `error`; what a client has is a JPEG file, turned upright by its EXIF tag. Each image is decoded on its own: one
  that cannot be decoded gets valid=False, an error, NaN and "" while the rest of the batch is classified; an empty
  batch gives empty outputs. Each image's size is read from its header first (JPEG, PNG, GIF, BMP): one with more
  pixels than the limit the model was trained with (`--max-image-pixels`, kept in the model) is answered with its
  error and never decoded, so a huge image costs a request no more memory than a normal one.
- `serving_examples`: serialized tf.Examples -> the same outputs; what TFMA
  (the Evaluator) feeds.
The SavedModel needs only TensorFlow to load: no project code, no Keras.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.saved import saved_transform_io_v2

from config import DataConfig
from contract import features, storage
from contract.layout import KERAS_MODEL_FILE, TFLITE_FIDELITY_FILE, TFLITE_FILES, TRAINING_HISTORY_FILE, WARMUP_FILE
from trainer import model as model_lib
from trainer import preprocessing
from trainer.tflite import native_logs_held, tflite_logits


def _big_endian(raw: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64))


def _little_endian(raw: tf.Tensor) -> tf.Tensor:
    weights = tf.constant([1, 1 << 8, 1 << 16, 1 << 24][:int(raw.shape[0])], tf.int64)
    return tf.reduce_sum(tf.cast(raw, tf.int64) * weights)


def _header_bytes(encoded: tf.Tensor, start: int, length: int) -> tf.Tensor:
    """`length` bytes of `encoded` from `start`, as uint8; an error when the data is shorter (the caller's
    tf.data pipeline drops such an image, which then fails to decode)."""
    return tf.reshape(tf.io.decode_raw(tf.strings.substr(encoded, start, length), tf.uint8), [length])


def _gif_pixel_count(encoded: tf.Tensor) -> tf.Tensor:
    """The most pixels a GIF's decoder takes on: the largest of its logical screen, each frame, the canvas
    TensorFlow allocates (the widest frame's width by the tallest one's height) and all frames together (giflib
    decodes every frame before the first is kept). A walk over the GIF's blocks in graph ops: descriptors
    (0x2C) and extensions (0x21), each followed by sub-blocks of up to 255 bytes, until the trailer."""
    data = tf.concat([tf.io.decode_raw(encoded, tf.uint8), tf.zeros([16], tf.uint8)], 0)  # reads past the end: 0
    end = tf.cast(tf.size(data), tf.int64) - 16

    def at(position):
        return tf.cast(tf.gather(data, tf.minimum(tf.cast(position, tf.int64), end + 15)), tf.int64)

    def color_table(flags):
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0)

    def step(position, in_blocks, wide, tall, total, done):
        byte = at(position)
        # In sub-blocks: full ones (255 bytes) are skipped in runs, then one more; a zero size ends them.
        strides = position + 256 * tf.range(_GIF_RUN, dtype=tf.int64)
        full = tf.reduce_sum(tf.math.cumprod(tf.cast(tf.equal(at(strides), 255), tf.int64)))
        in_blocks_next = tf.where(full > 0, position + 256 * full, position + 1 + byte)
        # At a record: an extension's label, or a descriptor (width, height at +5, +7) and its color table.
        width, height = at(position + 5) + 256 * at(position + 6), at(position + 7) + 256 * at(position + 8)
        image = tf.equal(byte, 0x2C)
        record_next = tf.where(image, position + 11 + color_table(at(position + 9)), position + 2)
        record_ends = tf.logical_not(tf.logical_or(image, tf.equal(byte, 0x21)))
        counted = tf.logical_and(tf.logical_not(in_blocks), image)
        return (tf.where(in_blocks, in_blocks_next, record_next),
                tf.where(in_blocks, tf.logical_or(full > 0, byte > 0), tf.logical_not(record_ends)),
                tf.where(counted, tf.maximum(wide, width), wide), tf.where(counted, tf.maximum(tall, height), tall),
                tf.where(counted, total + width * height, total),
                tf.logical_and(tf.logical_not(in_blocks), record_ends))

    start = 13 + color_table(at(10))
    zero = tf.constant(0, tf.int64)
    _, _, wide, tall, total, _ = tf.while_loop(
        lambda position, in_blocks, wide, tall, total, done: tf.logical_and(tf.logical_not(done), position < end),
        step, (start, tf.constant(False), zero, zero, zero, tf.constant(False)))
    screen = (at(6) + 256 * at(7)) * (at(8) + 256 * at(9))
    return tf.reduce_max(tf.stack([screen, wide * tall, total]))


# Sub-blocks of 255 bytes skipped at once in the GIF walk: a frame's data is mostly such blocks.
_GIF_RUN = 64


def header_pixel_count(encoded: tf.Tensor) -> tf.Tensor:
    """The most pixels (int64) the decoder takes on for one encoded image, read from its headers alone; 0 for
    data of no format the server decodes (it fails to decode anyway). For a header that cannot be read it
    raises. A JPEG's size is libjpeg's own reading of its header (the frame it decodes; a second frame header
    fails the decode before any pixel is allocated); a GIF's is every frame's (_gif_pixel_count)."""
    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)  # libjpeg reads the header only
        return shape[0] * shape[1]

    def png():  # IHDR: width, height as big-endian uint32 at bytes 16 and 20
        return _big_endian(_header_bytes(encoded, 16, 4)) * _big_endian(_header_bytes(encoded, 20, 4))

    def gif():
        return _gif_pixel_count(encoded)

    def bmp():  # BITMAPINFOHEADER: width, height as little-endian int32 at bytes 18 and 22 (height < 0: top-down)
        width, height = _little_endian(_header_bytes(encoded, 18, 4)), _little_endian(_header_bytes(encoded, 22, 4))
        height = tf.where(height >= 1 << 31, (1 << 32) - height, height)
        return width * height

    def starts(magic: bytes):
        return tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic)

    return tf.case([(starts(b"\xff\xd8\xff"), jpeg), (starts(b"\x89PNG\r\n\x1a\n"), png), (starts(b"GIF"), gif),
                    (starts(b"BM"), bmp)], default=lambda: tf.constant(0, tf.int64), exclusive=False)


class ServingModule(tf.Module):
    def __init__(self, model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                 max_pixels: int = DataConfig.max_image_pixels):
        super().__init__(name="cats_vs_dogs_serving")
        # The Keras model is called, not tracked: as a child it would bring its object graph (every layer, and
        # Keras' own trace of its call) into the SavedModel, seconds of every export and of every load for objects
        # no signature reads. Its weights, which the traced calls capture, are what is saved. It is traced once,
        # for both signatures, which call that one function: the network is stored once in the SavedModel, not
        # inlined into each signature (a smaller file, a faster export and load).
        self._image_size = int(model.input_shape[1])
        network = tf.function(functools.partial(model.__call__, training=False), autograph=False, input_signature=[
            tf.TensorSpec([None, self._image_size, self._image_size, 3], tf.float32, name="pixels")])
        self._network = functools.partial(network.get_concrete_function())  # a partial: not tracked by the module
        # TensorFlow's own variables, not Keras 3's wrappers of them: the wrappers are saved as objects of their
        # own, which tf.saved_model.load maps back, but the graph's restore op, which TF Serving runs, then writes
        # variables the signatures never read ("Could not find variable" on every request).
        self.model_variables = [weight.value for weight in model.weights]
        self.max_pixels = max_pixels  # the training setting; a constant of the exported graph
        # The Transform graph as TFT's own layer loads it, without the layer: a Keras (tf_keras) layer in a
        # SavedModel is serialized with traces of its call functions, seconds of every export for functions
        # nothing here calls. The loader's attributes are tracked, as the layer tracks them, so the graph's
        # resources are saved with the model.
        self._transform = saved_transform_io_v2.SavedModelLoader(tf_transform_output.transform_savedmodel_dir)
        self._transform_tracked = self._transform.__dict__
        raw_spec = tf_transform_output.raw_feature_spec()
        # Clients have images, not labels or ingest metadata.
        self._example_spec = {features.IMAGE_KEY: raw_spec[features.IMAGE_KEY]}
        self._class_names = tf.constant(features.LABEL_NAMES)

    def _probability(self, pixels: tf.Tensor) -> tf.Tensor:
        """The dog probability of each image in `pixels` (float32 [n, size, size, 3]); n may be 0.

        An empty batch never reaches the network: oneDNN's kernels on some x86-64 CPUs (AMD EPYC seen)
        fail a BatchNorm on a zero-size batch ("Incompatible shapes: [0,64,64,3] vs. [16]").
        """
        return tf.cond(tf.shape(pixels)[0] > 0,
                       lambda: tf.reshape(tf.sigmoid(self._network(pixels)), [-1]),
                       lambda: tf.zeros([0], tf.float32))

    def _predict_from_raw(self, raw_features: dict) -> dict:
        transformed = self._transform.apply_transform_model(raw_features)
        probability = self._probability(tf.cast(transformed[features.PIXELS_KEY], tf.float32))
        class_index = tf.cast(probability >= 0.5, tf.int32)
        return {
            features.PROBABILITY_OUTPUT: probability,
            features.CLASS_OUTPUT: tf.gather(self._class_names, class_index),
        }

    def _too_large(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """bool [n]: which images' headers give more pixels than the limit (a header that cannot be read: no)."""
        count = tf.shape(image_bytes)[0]
        sizes = (tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
                 .map(lambda index, encoded: (index, header_pixel_count(encoded))).ignore_errors())
        sentinel = tf.data.Dataset.from_tensors((tf.constant(-1), tf.constant(0, tf.int64)))
        indices, pixels = sizes.concatenate(sentinel).batch(1 << 30).get_single_element()
        counted = tf.scatter_nd(tf.expand_dims(indices[:-1], 1), pixels[:-1], tf.cast([count], tf.int32))
        return counted > self.max_pixels

    def serve_images(self, image_bytes):
        count = tf.shape(image_bytes)[0]
        too_large = self._too_large(image_bytes)

        def transform_one(index, encoded):
            pixels = self._transform.apply_transform_model(
                {features.IMAGE_KEY: tf.reshape(preprocessing.on_white(encoded), [1, 1])})[features.PIXELS_KEY]
            return index, tf.cast(pixels[0], tf.float32)

        # The Transform graph decodes a batch in one op, which fails for the whole batch on one bad image.
        # Per image in tf.data, a failing decode drops only that element (ignore_errors); the indices kept
        # say which images were classified. A sentinel element makes the single batch exist even when no
        # image is valid (or none was sent).
        decoded = (tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes, too_large))
                   .filter(lambda index, encoded, large: tf.logical_not(large))
                   .map(lambda index, encoded, large: transform_one(index, encoded)).ignore_errors())
        size = self._image_size
        sentinel = tf.data.Dataset.from_tensors((tf.constant(-1), tf.zeros([size, size, 3], tf.float32)))
        indices, pixels = decoded.concatenate(sentinel).batch(1 << 30).get_single_element()
        indices, pixels = indices[:-1], pixels[:-1]
        # upright by its EXIF tag, as ingest made what was trained on (not in the Transform graph: every trace pays)
        pixels = preprocessing.upright(pixels, tf.gather(preprocessing.exif_orientations(image_bytes), indices))
        probability = self._probability(pixels)
        names = tf.gather(self._class_names, tf.cast(probability >= 0.5, tf.int32))
        positions = tf.expand_dims(indices, 1)
        valid = tf.scatter_nd(positions, tf.ones_like(indices), [count]) > 0
        return {
            features.PROBABILITY_OUTPUT: tf.tensor_scatter_nd_update(
                tf.fill([count], float("nan")), positions, probability),
            features.CLASS_OUTPUT: tf.tensor_scatter_nd_update(tf.fill([count], ""), positions, names),
            features.VALID_OUTPUT: valid,
            features.ERROR_OUTPUT: tf.where(valid, "", tf.where(
                too_large, f"more than {self.max_pixels} pixels, the limit the model was trained with",
                "not a decodable image (JPEG, PNG, GIF or BMP expected)")),
        }

    def serve_examples(self, examples):
        raw = tf.io.parse_example(examples, self._example_spec)
        return self._predict_from_raw(raw)


def _traced(method, input_name: str):
    """`method` traced once for a batch of strings. The signatures are the SavedModel's only functions: a
    tf.function attribute of the module would be traced again by tf.saved_model.save, whose save context is part
    of the tracing cache's key (seconds of every export for a copy of each signature)."""
    signature = [tf.TensorSpec([None], tf.string, name=input_name)]
    return tf.function(method, input_signature=signature, autograph=False).get_concrete_function()


def export_serving_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput, export_dir: str,
                         max_pixels: int = DataConfig.max_image_pixels) -> None:
    """Writes the SavedModel with both signatures, plus the Keras model file. `max_pixels`: serving answers
    larger images with an error (the training data's --max-image-pixels)."""
    module = ServingModule(model, tf_transform_output, max_pixels)
    signatures = {
        features.SERVING_SIGNATURE: _traced(module.serve_images, features.IMAGE_INPUT),
        features.EXAMPLES_SIGNATURE: _traced(module.serve_examples, "examples"),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    keras_path = os.path.join(export_dir, KERAS_MODEL_FILE)
    tf.io.gfile.makedirs(os.path.dirname(keras_path))
    with tempfile.TemporaryDirectory() as scratch:  # Keras writes local files only; export_dir may be remote.
        local = os.path.join(scratch, os.path.basename(keras_path))
        model.save(local)
        tf.io.gfile.copy(local, keras_path, overwrite=True)


# Batch sizes of the warm-up requests: one record each, so that TF Serving has run the model on the shapes
# clients send before the first of them arrives (it replays at most 1000 records).
WARMUP_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def write_warmup_requests(export_dir: str, jpegs: list[bytes],
                          batch_sizes: tuple[int, ...] = WARMUP_BATCH_SIZES) -> int:
    """Writes TF Serving's warm-up file (layout.WARMUP_FILE) of `serving_default` requests made of `jpegs`,
    real images, cycled to fill each batch; returns the number of records."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    if not jpegs:
        return 0
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for size in batch_sizes:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=features.SERVING_SIGNATURE))
            batch = [jpegs[index % len(jpegs)] for index in range(size)]
            request.inputs[features.IMAGE_INPUT].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(batch_sizes)


def tflite_models(classifier: keras.Model, representative_pixels) -> dict[str, bytes]:
    """{"float16": ..., "int8": ...} TFLite flatbuffers of the classifier.

    Input: float32 pixels [1, size, size, 3] in [0, 255]; output: the logit.
    int8 is full-integer quantization calibrated on `representative_pixels`
    (training images), with float input and output.
    """
    # From the traced call, which the converter freezes itself: TF 2.16's converter fails on Keras 3 models given
    # directly, and a SavedModel in between (Keras' export, loaded again by each conversion) costs several times
    # as long for the same outputs (docs/performance.md). A function as the tracked object keeps it on this path.
    size = classifier.input_shape[1]
    call = tf.function(lambda pixels: classifier(pixels, training=False),
                       input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
    traced = call.get_concrete_function()
    models = {}
    for kind in TFLITE_FILES:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([traced], call)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "float16":
            converter.target_spec.supported_types = [tf.float16]
        else:
            converter.representative_dataset = lambda: ([representative_pixels[i:i + 1]]
                                                        for i in range(len(representative_pixels)))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with native_logs_held(), warnings.catch_warnings():
            # On this path the int8 conversion warns of missing statistics for quantized inputs; its input is
            # float32, as asked, and the representative images set the scales.
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            models[kind] = converter.convert()
    return models


def tflite_fidelity(models: dict[str, bytes], pixels, reference_logits) -> dict:
    """How closely each TFLite model follows the classifier (`reference_logits`) on
    `pixels`: {"images", "reference_logit_std", "models": {kind: {"agreement" (share
    of images given the same class), "logit_error_mean", "_rms", "_max", "bytes"}}}."""
    reference = np.asarray(reference_logits, np.float64).ravel()
    per_model = {}
    for kind, flatbuffer in models.items():
        logits = tflite_logits(flatbuffer, pixels).astype(np.float64)
        error = logits - reference
        per_model[kind] = {
            "agreement": round(float(np.mean((logits >= 0) == (reference >= 0))), 4),
            "logit_error_mean": round(float(error.mean()), 4),
            "logit_error_rms": round(float(np.sqrt(np.mean(error ** 2))), 4),
            "logit_error_max": round(float(np.abs(error).max()), 4),
            "bytes": len(flatbuffer),
        }
    return {"images": int(len(reference)), "reference_logit_std": round(float(reference.std()), 4),
            "models": per_model}


def read_tflite_fidelity(serving_model_dir: str) -> dict | None:
    """What `export_tflite` measured for the SavedModel in `serving_model_dir` (local or remote), if anything;
    storage.UnreadableFileError names a damaged file."""
    path = os.path.join(serving_model_dir, TFLITE_FIDELITY_FILE)
    if not storage.backend.exists(path):  # through storage, as the read below: a bucket root reads alike
        return None
    fidelity = storage.read_json(path)
    models = fidelity.get("models")
    if not isinstance(fidelity.get("images"), (int, float)) or not isinstance(models, dict):
        raise storage.UnreadableFileError(path, "no 'images' count or no 'models' object in it")
    for kind, measured in models.items():
        if not isinstance(measured, dict) or not all(isinstance(measured.get(key), (int, float))
                                                     for key in _FIDELITY_NUMBERS):
            raise storage.UnreadableFileError(path, f"model {kind!r} lacks one of the numbers "
                                                    f"{', '.join(_FIDELITY_NUMBERS)}")
    return fidelity


_FIDELITY_NUMBERS = ("agreement", "logit_error_mean", "logit_error_rms", "logit_error_max", "bytes")
_CACHE_FIELDS = ("location", "views", "bytes", "fill_seconds")


def read_training_history(serving_model_dir: str) -> dict | None:
    """The training history (layout.TRAINING_HISTORY_FILE) of the model in `serving_model_dir`, if it has one;
    storage.UnreadableFileError names a damaged file."""
    path = os.path.join(serving_model_dir, TRAINING_HISTORY_FILE)
    if not tf.io.gfile.exists(path):
        return None
    history = storage.read_json(path)
    epochs = history.get("epochs", [])
    if not isinstance(epochs, list) or not all(isinstance(e, dict) and isinstance(e.get("epoch"), int)
                                               for e in epochs):
        raise storage.UnreadableFileError(path, "its 'epochs' is not a list of epochs with their number")
    cache = history.get("cache")
    if cache is not None and not (isinstance(cache, dict) and set(_CACHE_FIELDS) <= set(cache)):
        raise storage.UnreadableFileError(path, "its 'cache' lacks location, views, bytes or fill_seconds")
    if not isinstance(history.get("devices") or [], list):
        raise storage.UnreadableFileError(path, "its 'devices' is not a list")
    return history


def read_training_record(serving_model_dir: str) -> dict | None:
    """Where and how the model in `serving_model_dir` trained: the devices, cached views, settings and where
    their hyperparameters came from, of its training history (layout.TRAINING_HISTORY_FILE), if it has one;
    storage.UnreadableFileError names a damaged file."""
    return training_record(read_training_history(serving_model_dir))


def training_record(history: dict | None) -> dict | None:
    """read_training_record's part of a training history already read."""
    return {key: history.get(key) for key in ("devices", "cached_views", "cache", "settings", "hyperparameters")} \
        if history is not None else None


def tflite_agreement(fidelity: dict) -> dict[str, float]:
    """{"float16": share, "int8": share} of the checked images given the classifier's class."""
    return {kind: measured["agreement"] for kind, measured in fidelity["models"].items()}


def export_tflite(classifier: keras.Model, representative_pixels, export_dir: str, check_pixels=None) -> dict | None:
    """Writes the TFLite models beside the SavedModel and, given `check_pixels`
    (eval images), how closely they follow the classifier on them."""
    models = tflite_models(classifier, representative_pixels)
    for kind, flatbuffer in models.items():
        with tf.io.gfile.GFile(os.path.join(export_dir, TFLITE_FILES[kind]), "wb") as f:
            f.write(flatbuffer)
    if check_pixels is None or not len(check_pixels):
        return None
    fidelity = tflite_fidelity(models, check_pixels, model_lib.inference_logits(classifier, check_pixels))
    with tf.io.gfile.GFile(os.path.join(export_dir, TFLITE_FIDELITY_FILE), "w") as f:
        f.write(json.dumps(fidelity, indent=2))
    return fidelity
