"""The serving SavedModel, built with a real Transform graph, against the Keras model."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from config import DataConfig, TrainingConfig
from contract import features, layout
from inference import tf_serving
from inference.tf_serving import SessionBundle
from ingest.images import check_image
from ingest.span_pipeline import make_example
from tests.helpers import CHEAP_BASE, transform_graph
from trainer import export, preprocessing
from trainer import model as model_lib
from trainer.tflite import tflite_logits

SIZE = 64


@pytest.fixture(scope="module")
def transform_output(tmp_path_factory, demo_jpegs):
    return transform_graph(tmp_path_factory.mktemp("transform"), demo_jpegs, SIZE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, transform_output):
    classifier = model_lib.get_classifier(
        model_lib.build_model(TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE, seed=1), SIZE))
    path = str(tmp_path_factory.mktemp("serving") / "model")
    export.export_serving_model(classifier, transform_output, path)
    return classifier, path


def _expected(classifier, jpegs):
    pixels = tf.cast(preprocessing.decode_and_resize(tf.constant(jpegs), SIZE), tf.float32)
    return tf.sigmoid(classifier(pixels, training=False)).numpy().ravel()


def test_jpeg_signature_equals_the_model_on_decoded_pixels(exported, demo_jpegs):
    classifier, path = exported
    jpegs = demo_jpegs["cat"] + demo_jpegs["dog"]
    serve = tf.saved_model.load(path).signatures["serving_default"]
    result = serve(image_bytes=tf.constant(jpegs))
    probability = result[features.PROBABILITY_OUTPUT].numpy()
    np.testing.assert_allclose(probability, _expected(classifier, jpegs), rtol=1e-5, atol=1e-6)
    expected_names = [features.LABEL_NAMES[int(p >= 0.5)].encode() for p in probability]
    assert list(result[features.CLASS_OUTPUT].numpy()) == expected_names


def test_a_photo_turned_by_its_exif_tag_and_a_transparent_png_are_classified_as_ingest_and_predict_see_them(
        transform_output, tmp_path):
    """A phone's photo sent as it is on disk (curl, KServe): the signature turns it by its EXIF orientation, as
    ingest did to what the model was trained on and `predict` does before it sends; a PNG's transparency is
    composited onto white, as they compose it. The model here says how much brighter an image's top half is than
    its bottom half, so an image on its side reads 0.5 and upright far from it."""
    import keras
    from PIL import Image, ImageOps

    network = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(1, SIZE, use_bias=False),
                                keras.layers.Flatten()])
    halves = np.ones((SIZE, SIZE, 3, 1), np.float32) / (SIZE * SIZE * 3 * 25.5)
    halves[SIZE // 2:] *= -1
    network.layers[0].set_weights([halves])
    export.export_serving_model(network, transform_output, str(tmp_path / "model"))
    pixels = np.zeros((SIZE * 2, SIZE * 3, 3), np.uint8)
    pixels[:SIZE] = 230  # the top half bright
    on_its_side, exif = io.BytesIO(), Image.Exif()
    exif[0x0112] = 6  # stored turned left: seen after a turn to the right
    Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90).save(on_its_side, "JPEG", quality=95,
                                                                      exif=exif.tobytes())
    as_ingest = io.BytesIO()
    ImageOps.exif_transpose(Image.open(io.BytesIO(on_its_side.getvalue()))).save(as_ingest, "PNG")
    # A sticker: its top half transparent (black under it, which TensorFlow's decoder alone would read), the bottom
    # half opaque and dark; ingest and `predict` see it on white, so its top half is the bright one.
    sticker, on_white = np.zeros((SIZE * 2, SIZE * 2, 4), np.uint8), io.BytesIO()
    sticker[SIZE:] = (20, 20, 20, 255)
    transparent = io.BytesIO()
    Image.fromarray(sticker, "RGBA").save(transparent, "PNG")
    composed = Image.new("RGB", (SIZE * 2, SIZE * 2), (255, 255, 255))
    composed.paste(Image.fromarray(sticker, "RGBA"), mask=Image.fromarray(sticker[..., 3], "L"))
    composed.save(on_white, "PNG")
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    probability = serve(image_bytes=tf.constant([on_its_side.getvalue(), as_ingest.getvalue(), transparent.getvalue(),
                                                 on_white.getvalue()]))[features.PROBABILITY_OUTPUT].numpy()
    assert probability[1] > 0.95 and abs(probability[0] - probability[1]) < 0.01, probability  # sigmoid(4.5)
    assert probability[3] > 0.95 and abs(probability[2] - probability[3]) < 0.01, probability
    unturned = tf.sigmoid(network(tf.cast(preprocessing.decode_and_resize(tf.constant([on_its_side.getvalue()]),
                                                                           SIZE), tf.float32))).numpy().item()
    assert abs(unturned - 0.5) < 0.05, "the image on its side, as the signature read it before"


def test_bad_images_are_marked_and_the_rest_of_the_batch_classified(exported, demo_jpegs):
    classifier, path = exported
    good = [demo_jpegs["cat"][0], demo_jpegs["dog"][1]]
    truncated = demo_jpegs["dog"][0][:200]
    serve = tf.saved_model.load(path).signatures["serving_default"]
    result = serve(image_bytes=tf.constant([good[0], b"", b"plain text", truncated, good[1]]))
    assert list(result[features.VALID_OUTPUT].numpy()) == [True, False, False, False, True]
    probability = result[features.PROBABILITY_OUTPUT].numpy()
    np.testing.assert_allclose(probability[[0, 4]], _expected(classifier, good), rtol=1e-5, atol=1e-6)
    assert np.isnan(probability[1:4]).all()
    names = result[features.CLASS_OUTPUT].numpy()
    assert names[1:4].tolist() == [b"", b"", b""] and names[0] in (b"cat", b"dog")
    errors = result[features.ERROR_OUTPUT].numpy()
    assert errors[0] == errors[4] == b"" and all(e.startswith(b"not a decodable image") for e in errors[1:4])


def _huge_headers() -> dict[str, bytes]:
    """Headers that claim more pixels than the default limit (4e8; a GIF's most, 65535 x 65535) with no image
    data behind them."""
    side = 20000
    png = (b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + side.to_bytes(4, "big") + side.to_bytes(4, "big")
           + b"\x08\x02\x00\x00\x00" + b"\x00" * 4)
    gif = b"GIF89a" + (65535).to_bytes(2, "little") + (65535).to_bytes(2, "little") + b"\x00" * 8
    bmp = (b"BM" + b"\x00" * 12 + (40).to_bytes(4, "little") + side.to_bytes(4, "little")
           + (-side).to_bytes(4, "little", signed=True) + b"\x01\x00\x18\x00" + b"\x00" * 24)
    return {"PNG": png, "GIF": gif, "BMP": bmp}


def _encoded(fmt: str, size: int = 24) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (90, 140, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_images_above_the_pixel_limit_get_an_error_from_their_header_and_the_rest_are_classified(exported,
                                                                                                demo_jpegs):
    _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    huge = _huge_headers()
    small = [_encoded(fmt) for fmt in ("PNG", "GIF", "BMP")]
    batch = [demo_jpegs["cat"][0], huge["PNG"], huge["GIF"], huge["BMP"], *small]
    result = serve(image_bytes=tf.constant(batch))
    assert result[features.VALID_OUTPUT].numpy().tolist() == [True, False, False, False, True, True, True]
    limit = DataConfig.max_image_pixels
    errors = [e.decode() for e in result[features.ERROR_OUTPUT].numpy()]
    assert errors[1:4] == [f"more than {limit} pixels, the limit the model was trained with"] * 3, errors
    assert np.isnan(result[features.PROBABILITY_OUTPUT].numpy()[1:4]).all()


def _probe_gif(side: int) -> bytes:
    """A GIF whose logical screen claims 16x16 and whose one frame is side x side (60 KB at 9000)."""
    from PIL import Image

    frame = Image.new("P", (side, side), 0)
    frame.putpalette([0, 0, 0, 255, 255, 255] * 128)
    buffer = io.BytesIO()
    frame.save(buffer, format="GIF")
    return buffer.getvalue()[:6] + (16).to_bytes(2, "little") * 2 + buffer.getvalue()[10:]


def test_huge_images_beside_a_good_one_cost_the_server_no_more_memory_than_a_normal_request(exported, demo_jpegs,
                                                                                            tmp_path):
    """A 12000x12000 JPEG (a 2 MB file) takes ~420 MiB more at its request's peak when decoded (measured with the
    limit lifted); its header alone is read. A 60 KB GIF claiming 16x16 with a 9000x9000 frame took 317 MiB more
    when its logical screen was all that was read. Peak memory is measured in a process of its own, as a
    server's."""
    from PIL import Image

    _, path = exported
    gradient = Image.linear_gradient("L").resize((12000, 12000)).convert("RGB")
    gradient.save(tmp_path / "huge.jpg", quality=30)
    del gradient
    (tmp_path / "huge.gif").write_bytes(_probe_gif(9000))
    (tmp_path / "good.jpg").write_bytes(demo_jpegs["dog"][0])
    # Loading the SavedModel peaks higher than one decode: the peak (VmHWM) is reset before each request
    # (Linux's clear_refs), so each request's own peak is what is compared.
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf

        def peak_mib():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

        serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        good = open(sys.argv[2], "rb").read()
        serve(image_bytes=tf.constant([good, good]))
        for huge in sys.argv[3:]:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = peak_mib()
            result = serve(image_bytes=tf.constant([open(huge, "rb").read(), good]))
            print(json.dumps({"grown_mib": peak_mib() - before, "valid": result["valid"].numpy().tolist(),
                              "error": result["error"].numpy()[0].decode()}))
    """)
    result = subprocess.run([sys.executable, "-c", script, path, str(tmp_path / "good.jpg"),
                             str(tmp_path / "huge.jpg"), str(tmp_path / "huge.gif")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in result.stdout.strip().splitlines()[-2:]:
        outcome = json.loads(line)
        assert outcome["valid"] == [False, True] and outcome["error"].startswith("more than 50000000 pixels")
        assert outcome["grown_mib"] < 64, outcome


def test_an_empty_batch_gives_empty_outputs_from_both_signatures(exported):
    # In a fresh process with TensorFlow's defaults, as a server loads it (oneDNN on: on some CPUs its kernels
    # fail a zero-size batch inside the network).
    _, path = exported
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        model = tf.saved_model.load(sys.argv[1])
        empty = tf.constant([], tf.string)
        shapes = {name: {key: value.shape.as_list() for key, value in model.signatures[name](**{arg: empty}).items()}
                  for name, arg in (("serving_default", "image_bytes"), ("serving_examples", "examples"))}
        print(json.dumps(shapes))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")}
    done = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shapes = json.loads(done.stdout.strip().splitlines()[-1])
    assert shapes["serving_default"] == {features.PROBABILITY_OUTPUT: [0], features.CLASS_OUTPUT: [0],
                                         features.VALID_OUTPUT: [0], features.ERROR_OUTPUT: [0]}
    assert shapes["serving_examples"] == {features.PROBABILITY_OUTPUT: [0], features.CLASS_OUTPUT: [0]}


def test_example_signature_agrees_with_the_jpeg_signature(exported, demo_jpegs):
    _, path = exported
    jpegs = demo_jpegs["dog"]
    examples = [make_example(check_image(j), 1, f"dog/{i}.jpg") for i, j in enumerate(jpegs)]
    loaded = tf.saved_model.load(path)
    by_example = loaded.signatures[features.EXAMPLES_SIGNATURE](examples=tf.constant(examples))
    by_jpeg = loaded.signatures["serving_default"](image_bytes=tf.constant(jpegs))
    np.testing.assert_allclose(by_example[features.PROBABILITY_OUTPUT], by_jpeg[features.PROBABILITY_OUTPUT],
                               rtol=1e-6)


def test_both_signatures_answer_in_a_session_as_tf_serving_runs_them(exported, demo_jpegs):
    """TF Serving restores the variables with the graph's own restore op and runs a signature by its tensors' names
    (inference/tf_serving.py's SessionBundle, as rollback checks a version). A Keras 3 model tracked by its Keras
    variables restores through tf.saved_model.load's object graph but not so: every request then fails with "Could
    not find variable"."""
    classifier, path = exported
    jpegs = demo_jpegs["cat"] + demo_jpegs["dog"]
    bundle = SessionBundle(path)
    try:
        by_image = bundle.run(features.SERVING_SIGNATURE, {features.IMAGE_INPUT: np.array([*jpegs, b"not an image"],
                                                                                         dtype=object)})
        examples = [make_example(check_image(j), 0, f"{i}.jpg") for i, j in enumerate(jpegs)]
        by_example = bundle.run(features.EXAMPLES_SIGNATURE, {"examples": np.array(examples, dtype=object)})
    finally:
        bundle.close()
    expected = _expected(classifier, jpegs)
    np.testing.assert_allclose(by_image[features.PROBABILITY_OUTPUT][:-1], expected, rtol=1e-5, atol=1e-6)
    assert list(by_image[features.VALID_OUTPUT]) == [True] * len(jpegs) + [False]
    assert tf_serving.problem(path) is None, "rollback serves such a version again"
    np.testing.assert_allclose(by_example[features.PROBABILITY_OUTPUT], expected, rtol=1e-5, atol=1e-6)


def test_keras_model_file_is_kept_beside_the_saved_model(exported, demo_jpegs):
    classifier, path = exported
    reloaded = keras.models.load_model(f"{path}/{layout.KERAS_MODEL_FILE}")
    jpegs = demo_jpegs["cat"]
    pixels = tf.cast(preprocessing.decode_and_resize(tf.constant(jpegs), SIZE), tf.float32)
    np.testing.assert_allclose(reloaded(pixels).numpy(), classifier(pixels).numpy(), rtol=1e-5, atol=1e-6)


def _predict(capsys, *argv):
    import pipeline_runner

    code = pipeline_runner.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def photos(tmp_path, demo_jpegs):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, jpeg in enumerate(demo_jpegs["cat"][:2] + demo_jpegs["dog"][:2]):
        (folder / f"p{i}.jpg").write_bytes(jpeg)
    return folder


def test_predict_prints_the_classifications_whatever_happens_to_the_sheet(exported, photos, tmp_path, capsys):
    _, path = exported
    code, out, err = _predict(capsys, "predict", photos, "--model", path, "--sheet", tmp_path / "x.txt")
    assert code == 2 and err.strip() == (f"error: --sheet {tmp_path / 'x.txt'}: the contact sheet is an image; "
                                         "give a path ending in .png, .jpg, .jpeg") and out == ""
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    code, out, err = _predict(capsys, "predict", photos, "--model", path, "--sheet", blocked / "sheet.png")
    assert code == 1 and all(f"p{i}.jpg" in out for i in range(4)), out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the contact sheet could not be written to "
                                                   f"{blocked / 'sheet.png'}: ") and "Traceback" not in err


def test_predict_explain_without_the_keras_model_is_refused_in_one_line(exported, photos, tmp_path, capsys):
    _, path = exported
    bare = tmp_path / "bare"
    shutil.copytree(path, bare)
    os.remove(bare / layout.KERAS_MODEL_FILE)  # a SavedModel another tool exported
    code, out, err = _predict(capsys, "predict", photos, "--model", bare, "--explain")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert ("--explain needs the Keras model this pipeline pushes beside the SavedModel "
            f"({layout.KERAS_MODEL_FILE})") in err


def test_predict_record_keeps_what_the_served_model_classified_as_traffic(exported, photos, tmp_path, capsys):
    """`predict --record` writes what the traffic sink writes for a cluster: the images as the model got them,
    its answers and the served version, origin `predict`; only a root's served model can be recorded."""
    from components.serving_pusher import push_model
    from traffic import spans as traffic_spans
    from traffic import window as traffic_window

    _, path = exported
    root = tmp_path / "root"
    root.mkdir()
    (root / layout.ROOT_MARKER).write_text("{}")
    assert push_model(path, str(root / "serving_model")).version == 1
    (photos / "broken.jpg").write_bytes(b"not an image")
    code, out, err = _predict(capsys, "predict", photos, "--output-dir", root, "--record", "--json")
    assert code == 1 and "recorded 4 images as traffic (span 1 of" in err, err  # 1: one file was unreadable
    predictions = {os.path.basename(p["path"]): p for p in json.loads(out)["predictions"]}
    window = traffic_window.read_window(str(root / "traffic"))
    assert window.origins == ["predict"] * 4 and window.versions.tolist() == [1] * 4
    assert len(set(window.request_ids)) == 1
    expected = [predictions[f"p{i}.jpg"]["dog_probability"] for i in range(4)]
    np.testing.assert_allclose(window.scores, expected, rtol=1e-6)
    assert window.images == [check_image((photos / f"p{i}.jpg").read_bytes()).jpeg for i in range(4)]

    code, out, err = _predict(capsys, "predict", photos, "--model", path, "--record")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--record records into a root's traffic" in err
    assert traffic_spans.committed_spans(str(root / "traffic")) == [1]


@pytest.fixture(scope="module")
def tflite_export(demo_jpegs, tmp_path_factory):
    """The TFLite models of a calibrated classifier, written by export_tflite (converted once for the module)."""
    import json

    model = model_lib.build_model(TrainingConfig(weights="none", alpha=0.35, seed=4), SIZE)  # the whole base's sizes
    jpegs = demo_jpegs["cat"] + demo_jpegs["dog"]
    pixels = tf.cast(preprocessing.decode_and_resize(tf.constant(jpegs), SIZE), tf.float32).numpy()
    model_lib.calibrate_batchnorm(model, pixels)  # else every output is ~0 and nothing is compared
    classifier = model_lib.get_classifier(model)
    folder = tmp_path_factory.mktemp("tflite")
    (folder / "assets.extra").mkdir()
    returned = export.export_tflite(classifier, pixels, str(folder), check_pixels=pixels[::-1])
    written = json.loads((folder / layout.TFLITE_FIDELITY_FILE).read_text())
    models = {kind: (folder / layout.TFLITE_FILES[kind]).read_bytes() for kind in layout.TFLITE_FILES}
    return {"classifier": classifier, "pixels": pixels, "returned": returned, "written": written,
            "models": models, "folder": folder}


def test_tflite_models_run_and_float16_tracks_the_keras_model(tflite_export):
    classifier, pixels, models = tflite_export["classifier"], tflite_export["pixels"], tflite_export["models"]
    expected = classifier(pixels).numpy().ravel()
    assert set(models) == {"float16", "int8"} and len(models["int8"]) < len(models["float16"])
    np.testing.assert_allclose(tflite_logits(models["float16"], pixels), expected, atol=0.1 * np.abs(expected).max())
    assert tflite_logits(models["int8"], pixels).shape == expected.shape


def test_export_tflite_records_how_closely_each_model_follows_the_classifier(tflite_export):
    classifier, pixels, written = tflite_export["classifier"], tflite_export["pixels"], tflite_export["written"]
    assert written == tflite_export["returned"] and written["images"] == len(pixels)
    reference = classifier(pixels[::-1]).numpy().ravel()
    assert written["reference_logit_std"] == pytest.approx(reference.std(), abs=1e-3)
    for kind in ("float16", "int8"):
        logits = tflite_logits(str(tflite_export["folder"] / layout.TFLITE_FILES[kind]), pixels[::-1])
        measured = written["models"][kind]
        assert measured["agreement"] == pytest.approx(np.mean((logits >= 0) == (reference >= 0)), abs=1e-4)
        assert measured["logit_error_max"] == pytest.approx(np.abs(logits - reference).max(), abs=1e-3)
        assert measured["bytes"] == len(tflite_export["models"][kind])
    assert written["models"]["float16"]["logit_error_rms"] < written["models"]["int8"]["logit_error_rms"]


def test_warmup_requests_parse_as_tf_serving_prediction_logs_and_replay_on_the_model(exported, demo_jpegs,
                                                                                      tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    version = tmp_path / "version"
    shutil.copytree(path, version)
    jpegs = demo_jpegs["cat"] + demo_jpegs["dog"]
    assert export.write_warmup_requests(str(version), jpegs) == len(export.WARMUP_BATCH_SIZES)
    records = list(tf.data.TFRecordDataset(str(version / layout.WARMUP_FILE)).as_numpy_iterator())
    assert 0 < len(records) <= 1000  # TF Serving's limit
    serve = tf.saved_model.load(str(version)).signatures[features.SERVING_SIGNATURE]
    sizes = []
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert request.model_spec.signature_name == features.SERVING_SIGNATURE
        assert set(request.inputs) == set(serve.structured_input_signature[1])
        images = tf.make_ndarray(request.inputs[features.IMAGE_INPUT])
        assert set(images.tolist()) <= set(jpegs)  # real images, not placeholders
        result = serve(**{features.IMAGE_INPUT: tf.constant(images)})
        assert result[features.VALID_OUTPUT].numpy().all()
        sizes.append(len(images))
    assert sizes == list(export.WARMUP_BATCH_SIZES)
    # and in a session, as TF Serving replays them before it reports the version AVAILABLE
    bundle = SessionBundle(str(version))
    try:
        assert bundle.replay_warmup() == len(export.WARMUP_BATCH_SIZES)
    finally:
        bundle.close()


# docs/serving.md, as a user copies it ---------------------------------------------------------------------------

def _doc_blocks(language: str) -> list[str]:
    import re

    from tests.helpers import ROOT

    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "docs" / "serving.md").read_text(), re.S)


def test_the_served_command_in_the_docs_runs_the_pinned_image_on_the_roots_config():
    from orchestration.serving import kserve

    (command,) = [block for block in _doc_blocks("sh") if "docker run" in block]
    release = kserve.matching_serving_release(tf.__version__)
    assert f"tensorflow/serving:{release} \\" in command and "-p 8501:8501" in command
    assert '--model_config_file="$ROOT/serving_model/models.config"' in command
    assert '-v "$ROOT/serving_model:$ROOT/serving_model:ro"' in command, "the config's paths hold in the container"
    # without Docker: TF Serving's own binary, started with the image's flags and the port the image serves REST on
    (binary,) = [block for block in _doc_blocks("sh") if "tensorflow_model_server " in block]
    flags = [line for line in command.splitlines() if line.lstrip().startswith("--")]
    assert flags and all(flag.strip(" \\") in binary for flag in flags) and "--rest_api_port=8501" in binary


def test_the_documented_requests_classify_a_photo_as_the_docs_answer(exported, demo_jpegs, tmp_path):
    """The curl lines and the Python client of docs/serving.md, run as written against TF Serving's REST routes
    (tests/serving_stand_in.py, running the exported model), get the answer the page shows: its fields and types."""
    import ast

    from tests.serving_stand_in import ServingStandIn

    _, path = exported
    (tmp_path / "my_cat.jpg").write_bytes(demo_jpegs["cat"][0])
    (shown,) = json.loads(_doc_blocks("json")[0])["predictions"]
    (python,) = _doc_blocks("python")
    status, request = [block for block in _doc_blocks("sh") if "curl" in block and "localhost:8501" in block]
    with ServingStandIn(path) as server:
        def run(command):
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                                    env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
            assert result.returncode == 0, result.stderr
            return result.stdout
        local = "http://localhost:8501"
        assert local in status and local in request and local in python
        states = json.loads(run(["sh", "-c", status.replace(local, server.url)]))["model_version_status"]
        assert [state["state"] for state in states] == ["AVAILABLE"]
        by_curl = json.loads(run(["sh", "-c", request.replace(local, server.url)]))["predictions"]
        by_python = ast.literal_eval(run([sys.executable, "-c", python.replace(local, server.url)]))
        assert server.requests == 2
    for answered in (by_curl, by_python):
        (answer,) = answered
        assert set(answer) == set(shown) and all(type(answer[key]) is type(shown[key]) for key in shown), answer
        assert answer["valid"] is True and answer["error"] == "" and answer["class_name"] in features.LABEL_NAMES
        assert answer["class_name"] == features.LABEL_NAMES[int(answer["dog_probability"] >= 0.5)]
    assert by_curl == by_python


def test_predict_url_classifies_photos_through_the_rest_api_as_the_model_on_disk_does(exported, demo_jpegs, tmp_path,
                                                                                     capsys):
    """`predict --url` against TF Serving's REST routes (tests/serving_stand_in.py, this exported model behind
    them) gives the table, the JSON and the contact sheet that `predict --model` gives; a file the server's model
    refuses and one that is no image are each their own line; a server that is not there or not this pipeline's
    model is one line."""
    import pipeline_runner
    from tests.serving_stand_in import ServingStandIn

    _, path = exported
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, jpeg in enumerate(demo_jpegs["cat"] + demo_jpegs["dog"]):
        (photos / f"{index}.jpg").write_bytes(jpeg)
    (photos / "notes.jpg").write_text("not an image")

    def predict(*where):
        sheet = tmp_path / f"{len(where)}-{where[0][2:]}.png"
        code = pipeline_runner.main(["predict", str(photos), *where, "--json", "--sheet", str(sheet)])
        out, err = capsys.readouterr()
        return code, json.loads(out), sheet, err

    local = predict("--model", path)
    with ServingStandIn(path) as server:
        remote = predict("--url", server.url)
        full = predict("--url", f"{server.url}/v1/models/cats-vs-dogs:predict")
        assert server.requests == 2, "the seven images in one request each"
    for code, answer, sheet, _ in (remote, full):
        assert code == local[0] == 1, "one file is no image"
        assert answer["predictions"] == local[1]["predictions"]
        assert sheet.read_bytes() == local[2].read_bytes()
    assert remote[1]["model"] == f"{server.url}/v1/models/cats-vs-dogs:predict"
    (unreadable,) = [p for p in remote[1]["predictions"] if p["error"]]
    assert unreadable["path"].endswith("notes.jpg")

    code = pipeline_runner.main(["predict", str(photos), "--url", server.url])  # the server is gone
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"error: no answer from {server.url}/v1/models/cats-vs-dogs" in err
    with ServingStandIn(path, name="another-model") as other:
        code = pipeline_runner.main(["predict", str(photos), "--url", other.url])
        err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "answered 404 Not Found: " in err and "Traceback" not in err
    code = pipeline_runner.main(["predict", str(photos), "--url", "http://127.0.0.1:9", "--explain"])
    err = capsys.readouterr().err
    assert code == 2 and "--explain needs the model's files or its root" in err
    for url in ("file:///etc/passwd", "localhost:8501", "http://", "http://h:1/?q=1"):  # never a local file read
        code = pipeline_runner.main(["predict", str(photos), "--url", url])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "give the server's http:// or https:// address" in err


@pytest.mark.parametrize("row, said", [
    ({"dog_probability": "abc", "class_name": "dog"}, "'dog_probability' \"abc\", not a probability"),
    ({"dog_probability": 7.5, "class_name": "dog"}, "'dog_probability' 7.5, not a probability"),
    ({"dog_probability": True, "class_name": "cat"}, "'dog_probability' true, not a probability"),
    ({"dog_probability": None, "class_name": "cat"}, "'dog_probability' null, not a probability"),
    ({"dog_probability": 0.9, "class_name": None}, "'class_name' null, not one of"),
    ({"dog_probability": 0.9, "class_name": "dog", "valid": "false"}, "'valid' not true or false"),
    ({"dog_probability": 0.9, "class_name": "dog\u001b[2J"}, "'class_name' \"dog\\u001b[2J\", not one of"),
])
def test_predict_url_shows_no_classification_the_server_did_not_give_as_one(tmp_path, capsys, row, said):
    """A server that answers something other than this pipeline's predictions is named in one line: nothing is
    classified from it, and its text never reaches the terminal raw."""
    import http.server
    import threading

    import pipeline_runner

    class Answer(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/moved"):
                self.send_response(302)
                self.send_header("Location", "/v1/models/cats-vs-dogs:predict")
                self.end_headers()
                return
            body = json.dumps({"predictions": [row]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "cat.jpg").write_bytes(_jpeg())
    url = f"http://user:secret@127.0.0.1:{server.server_address[1]}"
    try:
        code = pipeline_runner.main(["predict", str(tmp_path / "cat.jpg"), "--url", url])
        out, err = capsys.readouterr()
        assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
        assert said in err and "answered instance 0 with" in err and "secret" not in err and "\x1b" not in err
        code = pipeline_runner.main(["predict", str(tmp_path / "cat.jpg"), "--url", f"{url}/moved:predict"])
        err = capsys.readouterr().err
        assert code == 1 and "answered 302" in err, "a redirected POST would lose its images"
    finally:
        server.shutdown()
    code = pipeline_runner.main(["predict", str(tmp_path / "cat.jpg"), "--url", ""])
    assert code == 2 and "give the server's http:// or https:// address" in capsys.readouterr().err


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()
