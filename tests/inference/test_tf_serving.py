"""What TF Serving's loader makes of a version: loaded in a session, its variables checked, its warm-up replayed.

The models are small SavedModels (tests.helpers.servable_model); the pipeline's own export is checked the same way
in tests/trainer/test_export.py.
"""

import os
import re
import signal
import time

import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

from contract import errors, layout
from inference import tf_serving
from tests.helpers import servable_model
from trainer import export


def _jpeg(value: int = 128) -> bytes:
    return tf.io.encode_jpeg(tf.fill([4, 4, 3], tf.constant(value, tf.uint8))).numpy()


def _warmup_records(model, *records: bytes):
    os.makedirs(os.path.dirname(os.path.join(model, layout.WARMUP_FILE)), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(model, layout.WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record)


def test_a_version_whose_variables_the_restore_op_writes_is_served(tmp_path):
    model = servable_model(tmp_path / "1", "now")
    assert tf_serving.problem(model) is None
    bundle = tf_serving.SessionBundle(model)
    try:
        assert bundle.unrestored_variables() == []
        answer = bundle.run("serving_default", {"image_bytes": [_jpeg(0), _jpeg(255)]})
    finally:
        bundle.close()
    assert list(answer["tag"]) == [b"now", b"now"] and answer["dog_probability"].shape == (2,)


def test_a_version_tracking_keras_variable_wrappers_is_refused_without_sending_it_a_request(tmp_path):
    """tf.saved_model.load answers with such a model; TF Serving loads it and fails every request."""
    model = servable_model(tmp_path / "1", "before", keras_wrappers=True)
    answered = tf.saved_model.load(model).signatures["serving_default"](image_bytes=tf.constant([_jpeg()]))
    assert list(answered["tag"].numpy()) == [b"before"]
    bundle = tf_serving.SessionBundle(model)
    try:
        assert bundle.unrestored_variables() == ["head/bias", "head/kernel"]
        with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable head/"):
            bundle.run("serving_default", {"image_bytes": [_jpeg()]})  # what every request to TF Serving gets
    finally:
        bundle.close()
    assert tf_serving.problem(model) == (
        'its signatures read 2 variables its restore op never writes (head/bias, head/kernel): TF Serving would '
        'fail every request with "Could not find variable", as with every version exported before 2026-11-26')


def test_warmup_requests_are_replayed_and_a_failing_one_fails_the_version(tmp_path):
    model = servable_model(tmp_path / "1", "now")
    assert export.write_warmup_requests(model, [_jpeg()], batch_sizes=(1, 3)) == 2
    bundle = tf_serving.SessionBundle(model)
    try:
        assert bundle.replay_warmup() == 2
    finally:
        bundle.close()
    assert tf_serving.problem(model) is None
    # TF Serving fails the load of a version whose warm-up request fails: so does the check
    export.write_warmup_requests(model, [b"not an image"], batch_sizes=(1,))
    assert tf_serving.problem(model) == ("a warm-up request fails (InvalidArgumentError: Unknown image file format. "
                                         "One of JPEG, PNG, GIF, BMP required.)")


def test_warmup_files_tf_serving_refuses_are_refused_in_one_line_and_nothing_is_allocated_for_them(tmp_path):
    model = servable_model(tmp_path / "1", "now")
    request = prediction_log_pb2.PredictionLog()
    request.predict_log.request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([_jpeg()], dtype=tf.string))
    good = request.SerializeToString()
    _warmup_records(model, good, b"\x08\x96\x01 not a PredictionLog")
    assert tf_serving.problem(model) == "warm-up record 2 is not a PredictionLog"
    _warmup_records(model, *[good] * (tf_serving.MAX_WARMUP_RECORDS + 1))
    assert tf_serving.problem(model) == "its warm-up file holds more than 1,000 requests, which TF Serving refuses " \
                                        "to load"
    classify = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
        request=classification_pb2.ClassificationRequest()))
    _warmup_records(model, classify.SerializeToString())
    assert tf_serving.problem(model) == "warm-up record 1 is a classify_log record; the pipeline writes predict " \
                                        "requests only"
    # a record of 70 bytes that claims two billion strings
    bomb = prediction_log_pb2.PredictionLog()
    tensor = bomb.predict_log.request.inputs["image_bytes"]
    tensor.dtype = tf.string.as_datatype_enum
    tensor.tensor_shape.dim.add(size=2_000_000_000)
    _warmup_records(model, bomb.SerializeToString())
    assert tf_serving.problem(model) == "warm-up record 1's input 'image_bytes' claims 2,000,000,000 values"
    wrong_input = prediction_log_pb2.PredictionLog()
    wrong_input.predict_log.request.inputs["pixels"].CopyFrom(tf.make_tensor_proto([1.0]))
    _warmup_records(model, wrong_input.SerializeToString())
    assert tf_serving.problem(model) == "signature 'serving_default' has no input 'pixels'"


def test_a_folder_without_a_savedmodel_or_a_default_signature_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    assert tf_serving.problem(str(tmp_path / "empty")).startswith(
        f"TF Serving's loader fails on it (OSError: SavedModel file does not exist at: {tmp_path / 'empty'}")
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"other": module.f})
    assert tf_serving.problem(str(tmp_path / "other")) == \
        "it has no 'serving_default' signature, which TF Serving answers by default"


def test_a_warmup_request_that_never_answers_fails_the_check_at_its_deadline(tmp_path):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def forever(image_bytes):
        [count] = tf.while_loop(lambda i: i >= 0, lambda i: i + 1, [tf.constant(0, tf.int64)])
        return {"n": tf.fill(tf.shape(image_bytes), count)}

    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": forever})
    export.write_warmup_requests(str(tmp_path / "1"), [_jpeg()], batch_sizes=(1,))
    assert tf_serving.problem(str(tmp_path / "1"), seconds=2) == "its warm-up requests did not all answer within 2 s"


class _InterruptedWhenFinalized:
    """Ctrl-C arriving while a finalizer runs, as while TensorFlow's objects are finalized: Python prints the
    KeyboardInterrupt ("Exception ignored in ...") and drops it."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here, inside the finalizer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the interrupt the finalizer lost
def test_ctrl_c_during_the_check_is_raised_when_it_ends_never_dropped(tmp_path, monkeypatch):
    model = servable_model(tmp_path / "1", "now")
    export.write_warmup_requests(model, [_jpeg()], batch_sizes=(1, 2))
    replay, replayed = tf_serving.SessionBundle.replay_warmup, []

    def pressed_during_replay(bundle, *args):
        finalized = _InterruptedWhenFinalized()
        del finalized  # the real SIGINT is raised inside __del__ and lost there
        replayed.append(replay(bundle, *args))
        return replayed[-1]

    monkeypatch.setattr(tf_serving.SessionBundle, "replay_warmup", pressed_during_replay)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            tf_serving.problem(model)
        assert replayed == [2], "the check ran to its end first"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler before it is back"
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_crafted_models_text_reaches_the_line_escaped_and_a_storage_fault_is_raised_as_one(tmp_path, monkeypatch):
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def reads(image_bytes):
        return {"y": tf.strings.to_number(tf.fill(tf.shape(image_bytes), "\x1b[2K\x1b[1Aserved"))}

    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": reads})
    export.write_warmup_requests(str(tmp_path / "1"), [_jpeg()], batch_sizes=(1,))
    said = tf_serving.problem(str(tmp_path / "1"))
    assert re.fullmatch(r"a warm-up request fails \(InvalidArgumentError: .*\\x1b\[2K\\x1b\[1Aserved.*\)", said), said
    assert "\x1b" not in said

    def unreadable(*args, **kwargs):
        raise tf.errors.PermissionDeniedError(None, None, "403 caller does not have storage.objects.get access")

    monkeypatch.setattr(tf.compat.v1.saved_model.loader, "load", unreadable)
    with pytest.raises(errors.StorageFaultError, match="PermissionDeniedError: 403 caller"):
        tf_serving.problem(str(tmp_path / "1"))
