"""`predict --model FILE.tflite`: LiteRT's interpreter on a TFLite classifier, whatever its input and output types,
and one line naming the file for one it cannot run (the pushed files themselves: tests/e2e/test_local_pipeline.py)."""

import os
import pathlib
import time

import numpy as np
import pytest

from inference import on_device
from inference.predict import NoModelError
from tests.helpers import cli_in_process
from trainer import tflite


def _convert(model, signature, quantized=None, data=None):
    import tensorflow as tf

    call = tf.function(lambda pixels: model(pixels), input_signature=[signature])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([call.get_concrete_function()], call)
    if quantized is not None:  # full-integer, with integer input and output, as another converter setup writes
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([data[i:i + 1]] for i in range(len(data)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = quantized
    return converter.convert()


@pytest.fixture(scope="module")
def tiny():
    """A classifier of this pipeline's shape ([1, 8, 8, 3] pixels in, one logit out) and its pixels."""
    import keras

    keras.utils.set_random_seed(0)
    pixels = keras.Input((8, 8, 3), batch_size=1)
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 127.5, -1)(pixels))
    model = keras.Model(pixels, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(hidden)))
    data = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 3)).astype(np.float32)
    return model, data


# the converter's remark on integer inputs it was given no range for: the representative pixels set their scale
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs were expected")
@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_a_file_with_integer_input_and_output_is_given_and_read_through_its_scale_and_zero_point(tiny, kind):
    import tensorflow as tf

    model, data = tiny
    signature = tf.TensorSpec([1, 8, 8, 3], tf.float32)
    classifier = tflite.Classifier(_convert(model, signature, getattr(tf, kind), data))
    assert classifier.image_size == 8 and np.dtype(classifier._input["dtype"]) == np.dtype(kind)
    reference = model(data).numpy().ravel()
    # Pixels are whole numbers and the input's scale is about 1, so the input is exact; each integer layer rounds
    # its output to half a step of its scale, a few steps of the output's scale at the end (2 measured here).
    step = classifier._output["quantization"][0]
    assert np.abs(classifier.logits(data) - reference).max() <= 5 * step
    # read as they come, the integers would be off by about a hundred times the logits' spread
    assert 5 * step < 0.5 * reference.std()


def test_a_model_of_another_shape_is_refused_naming_its_input_and_output(tiny, tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((10,), batch_size=1)
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    path = tmp_path / "other.tflite"
    path.write_bytes(_convert(other, tf.TensorSpec([1, 10], tf.float32)))
    with pytest.raises(NoModelError) as refused:
        on_device.load_tflite(path)
    assert str(refused.value) == (f"--model {path} is not a TFLite classifier this command can run: its input is "
                                  "[1, 10] and its output [1, 2]: not a classifier of this pipeline (one image "
                                  "[1, size, size, 3] in, one dog logit out)")


@pytest.mark.parametrize("make,said", [
    (lambda path: path.write_bytes(b"not a flatbuffer"), " is not a TFLite classifier this command can run: "),
    (lambda path: path.write_bytes(b""), " is empty (0 bytes): not a TFLite model"),
    (lambda path: os.mkfifo(path), ": not a regular file: a named pipe"),
    (lambda path: path.mkdir(), ": not a regular file: a folder"),
    (lambda path: None, " cannot be read: No such file or directory"),
])
def test_predict_refuses_a_tflite_file_it_cannot_run_in_one_line_naming_it(demo_jpegs, tmp_path, make, said):
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(demo_jpegs["cat"][0])
    model = tmp_path / "model.tflite"
    make(model)
    result = cli_in_process("predict", photo, "--model", model)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: --model {model}{said}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "predictions").exists()


def test_explain_with_a_tflite_file_is_refused_before_anything_is_read(demo_jpegs, tmp_path):
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(demo_jpegs["cat"][0])
    result = cli_in_process("predict", photo, "--model", tmp_path / "never-read.tflite", "--explain")
    assert result.returncode == 2
    assert result.stderr == ("error: --explain draws on the Keras model's layers (assets.extra/model.keras), which a "
                             "TFLite file does not keep: give the pushed version's folder as --model instead\n")


def test_base_weights_refuses_a_tflite_file_naming_it(tmp_path):
    result = cli_in_process("base-weights", "--model", tmp_path / "model_int8.tflite", "--out", tmp_path / "base.h5")
    assert result.returncode == 2 and not (tmp_path / "base.h5").exists()
    assert result.stderr == (f"error: --model {tmp_path / 'model_int8.tflite'} is a TFLite file, which keeps no "
                             "Keras layers to save: give the pushed version's folder\n")


def test_a_model_with_an_open_side_or_an_output_that_is_no_number_is_refused(tmp_path):
    """Read by its "shape", an open side ([1, -1, -1, 3]) is 1: every photo would have become one pixel; a bool
    output was read as a logit."""
    import keras
    import tensorflow as tf

    pixels = keras.Input((None, None, 3), batch_size=1)
    open_sides = keras.Model(pixels, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(pixels)))
    with pytest.raises(ValueError, match=r"its input is \[1, -1, -1, 3\] and its output \[1, 1\]"):
        tflite.Classifier(_convert(open_sides, tf.TensorSpec([1, None, None, 3], tf.float32)))
    with pytest.raises(ValueError, match="its input is float32 and its output bool"):
        tflite.Classifier(_convert(lambda x: tf.reduce_mean(x, axis=[1, 2, 3]) > 100,
                                   tf.TensorSpec([1, 8, 8, 3], tf.float32)))


def test_a_file_of_a_version_whose_commit_record_is_unreadable_is_refused_and_one_kept_elsewhere_runs(tiny, tmp_path):
    import tensorflow as tf

    model, _ = tiny
    flatbuffer = _convert(model, tf.TensorSpec([1, 8, 8, 3], tf.float32))
    version = tmp_path / "serving_model" / "3"
    (version / "assets.extra").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"a version's")
    (version / "assets.extra" / "SHA256SUMS").write_bytes(b"\x00not a commit record")
    (version / "assets.extra" / "model_int8.tflite").write_bytes(flatbuffer)
    with pytest.raises(NoModelError, match=r"is a file of version .*/serving_model/3, whose commit record "
                                           r"\(assets.extra/SHA256SUMS\) cannot be read"):
        on_device.load_tflite(version / "assets.extra" / "model_int8.tflite")
    elsewhere = tmp_path / "downloads" / "assets.extra"  # a folder of that name, of no version: a file kept there
    elsewhere.mkdir(parents=True)
    (elsewhere / "model.tflite").write_bytes(flatbuffer)
    assert on_device.load_tflite(elsewhere / "model.tflite") is not None
    from cli import photos

    sheet = photos._default_sheet(elsewhere / "model.tflite")
    assert sheet == pathlib.Path.cwd() / "predictions" / "contact_sheet.png", "never written into the user's folder"


def test_a_weights_file_that_cannot_be_written_is_one_line_and_the_earlier_file_stays(tmp_path):
    """HDF5 words a full disk inside its own text (a RuntimeError, not an OSError): that was a traceback."""
    from cli import photos
    from contract.errors import RunFailedError

    earlier = tmp_path / "base.h5"
    earlier.write_bytes(b"the earlier weights")

    def full_disk(path):
        pathlib.Path(path).write_bytes(b"half")
        raise RuntimeError("Disable slist on flush dest failure failed (file write failed: time = now, errno = 28, "
                           "error message = 'No space left on device')")

    with pytest.raises(RunFailedError) as failed:
        photos._write_whole(earlier, full_disk)
    assert str(failed.value) == f"--out {earlier} cannot be written: No space left on device"
    assert earlier.read_bytes() == b"the earlier weights" and sorted(tmp_path.iterdir()) == [earlier]


def test_a_killed_writes_temporary_file_is_removed_by_a_later_write_once_its_process_is_gone_an_hour(tmp_path):
    """`base-weights` killed between writing its temporary file and renaming it left the file for good."""
    import subprocess
    import sys

    from cli import photos

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale, fresh, alive = (tmp_path / f".base-weights-{pid}.tmp" for pid in (dead_pid, dead_pid + 1, os.getppid()))
    for left in (stale, fresh, alive):
        left.write_bytes(b"half a weights file")
    hour_ago = time.time() - 3700
    for left in (stale, alive):
        os.utime(left, (hour_ago, hour_ago))
    os.utime(fresh, (time.time() - 60, time.time() - 60))
    linked = tmp_path / f".base-weights-{dead_pid + 2}.tmp"
    linked.symlink_to(tmp_path / "elsewhere")
    odd = tmp_path / ".base-weights-\u00b2.tmp"  # a digit to isdigit(), not to int(): that was a traceback
    made_here = tmp_path / f".base-weights-{dead_pid}-k2x9q.tmp"  # as this release names them
    for left in (odd, made_here):
        left.write_bytes(b"half")
        os.utime(left, (hour_ago, hour_ago))
    photos._write_whole(tmp_path / "base.h5", lambda path: pathlib.Path(path).write_bytes(b"weights"))
    assert (tmp_path / "base.h5").read_bytes() == b"weights"
    assert not stale.exists() and not made_here.exists(), "its process is gone and it has not changed for an hour"
    assert odd.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".base-weights-")) == sorted(
        p.name for p in (fresh, alive, linked, odd)), "the write's own temporary file is gone"
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "base.h5").stat().st_mode & 0o777 == 0o666 & ~umask, "a new file's permissions, as before"
    assert alive.exists() and linked.is_symlink(), "a live process's file, and what is no file, are kept"
    assert fresh.exists(), "written a minute ago: a process elsewhere may still be writing it"
