"""What TF Serving's loader makes of a version: loaded in a session, warm-up requests replayed, one request asked.

The models are small SavedModels (tests.helpers.servable_model); the pipeline's own export is checked the same way
in tests/trainer/test_export.py.
"""

import re

import tensorflow as tf

from inference import tf_serving
from tests.helpers import servable_model
from trainer import export


def _jpeg(value: int = 128) -> bytes:
    return tf.io.encode_jpeg(tf.fill([4, 4, 3], tf.constant(value, tf.uint8))).numpy()


def test_a_version_whose_variables_the_restore_op_writes_is_served(tmp_path):
    model = servable_model(tmp_path / "1", "now")
    assert tf_serving.problem(model) is None
    bundle = tf_serving.SessionBundle(model)
    try:
        answer = bundle.run("serving_default", {"image_bytes": [_jpeg(0), _jpeg(255)]})
    finally:
        bundle.close()
    assert list(answer["tag"]) == [b"now", b"now"] and answer["dog_probability"].shape == (2,)


def test_a_version_tracking_keras_variable_wrappers_fails_every_request_though_tf_saved_model_load_answers(tmp_path):
    model = servable_model(tmp_path / "1", "before", keras_wrappers=True)
    answered = tf.saved_model.load(model).signatures["serving_default"](image_bytes=tf.constant([_jpeg()]))
    assert list(answered["tag"].numpy()) == [b"before"]
    # which of the two variables a request reads first is the graph's scheduling
    assert re.fullmatch(r"it loads, but every request to it fails \(FailedPreconditionError: Could not find "
                        r"variable head/(kernel|bias)\.\)", tf_serving.problem(model))


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
    assert tf_serving.problem(model) == ("it loads, but every request to it fails (InvalidArgumentError: Unknown "
                                         "image file format. One of JPEG, PNG, GIF, BMP required.)")


def test_a_folder_without_a_savedmodel_or_a_default_signature_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    assert tf_serving.problem(str(tmp_path / "empty")).startswith(
        f"TF Serving's loader fails on it (OSError: SavedModel file does not exist at: {tmp_path / 'empty'}")
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x * 2}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"other": module.f})
    assert tf_serving.problem(str(tmp_path / "other")) == \
        "it has no 'serving_default' signature, which TF Serving answers by default"
