"""Helpers of the tests that drive the CLI and read MLMD directly."""

import contextlib
import hashlib
import json
import os
import pathlib
import subprocess
import sys

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from contract import metadata as node_ids

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE_NAME = "cats-vs-dogs"
# MobileNetV2 kept to its blocks up to block_2 (27 of its 154 layers), fine-tuning block_2's layers: the same two
# phases as the whole base from the schedules' layer (100, or 30 from random weights), with a sixth of the layers to
# trace, save, convert and load, most of a tiny Trainer's and Evaluator's time. Tests that check the whole base
# (its layers, weights files, the feature cache's cut) build it themselves.
CHEAP_BASE_BLOCKS = 2
CHEAP_FINE_TUNE_FROM = 18
CHEAP_BASE = {"base_blocks": CHEAP_BASE_BLOCKS, "fine_tune_from": CHEAP_FINE_TUNE_FROM}  # as TrainingConfig's fields
# Settings that make a whole pipeline run cheap: the e2e tests check orchestration, not accuracy.
CHEAP_TRAINING = ["--image-size", "64", "--alpha", "0.35", "--weights", "none", "--base-blocks", str(CHEAP_BASE_BLOCKS),
                  "--head-epochs", "1", "--fine-tune-epochs", "1", "--fine-tune-from", str(CHEAP_FINE_TUNE_FROM),
                  "--batch-size", "8", "--calibration-images", "16"]
# Tiny spans hold a few test images: below the data gate's default floor (tests/e2e/test_local_pipeline.py keeps it).
TINY = [*CHEAP_TRAINING, "--min-eval-examples", "1"]


def file_size_limited(env: dict | None = None) -> dict:
    """The environment for a process run under a file size limit (RLIMIT_FSIZE): no bytecode written.

    importlib writes a module's .pyc in one write() and renames it into place without checking how much was
    written, so a module first imported under the limit is left cut at it in the environment, and every later
    import of it fails ("marshal data too short"): modules named test_*.py above all (TensorFlow and Beam have
    some), whose plain .pyc the suite's own pytest processes never write."""
    return {**(os.environ if env is None else env), "PYTHONDONTWRITEBYTECODE": "1"}


@contextlib.contextmanager
def no_bytecode_written():
    """This process, and any process it starts meanwhile (which inherits the limit), writes no .pyc until the block
    ends: for a file size limit in this process (file_size_limited says why)."""
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    environment = os.environ.get("PYTHONDONTWRITEBYTECODE")
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        yield
    finally:
        sys.dont_write_bytecode = before
        if environment is None:
            del os.environ["PYTHONDONTWRITEBYTECODE"]
        else:
            os.environ["PYTHONDONTWRITEBYTECODE"] = environment


@contextlib.contextmanager
def deep_tree(top: pathlib.Path, depth: int):
    """`top`/d/d/.../d, `depth` folders, made and removed one folder at a time: pathlib's mkdir(parents=True) and
    shutil.rmtree (pytest's clean-up of old temporary folders, in a later session too) recurse, and a tree deeper
    than Python's recursion limit would fail them. Yields the deepest folder; its files are removed with it."""
    path = top
    try:
        for _ in range(depth):
            path = path / "d"
            path.mkdir()
        yield path
    finally:
        while path != top:
            for entry in path.iterdir():
                if not entry.is_dir() or entry.is_symlink():
                    entry.unlink()
            path.rmdir()
            path = path.parent


def without_root_powers() -> list[str]:
    """The command prefix under which file permissions apply: root bypasses them unless these capabilities go."""
    import pytest

    if os.geteuid() != 0:
        return []
    probe = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root and setpriv cannot drop CAP_DAC_OVERRIDE here: permissions cannot apply")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def project_packages() -> set[str]:
    """The project's top-level packages and modules, as shipped (not the tests or the benchmarks)."""
    return {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"} | {"pipeline_runner"}


def stdout_buffering_env(unbuffered: bool) -> dict:
    """This environment with stdout buffered as in a person's shell, or unbuffered (PYTHONUNBUFFERED=1, which some
    shells and containers set): a write to a gone reader or a full disk fails at the write, or at the exit's flush."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return env | {"PYTHONUNBUFFERED": "1"} if unbuffered else env


def run_cli(data_dir, output_dir, *settings, in_process: bool = False):
    """Runs `pipeline_runner.py run` (on the existing spans when data_dir is None);
    returns the process result and the summary JSON.

    `in_process`: through the command line's entry point in this process (cli_in_process), for a run whose
    checks are its outcome, its lines and its effect on the root: a process of its own spends about 6 s of CPU
    importing TensorFlow, TFX and Beam again. A run whose checks need a process of its own keeps one: a
    signal, native libraries' output on stderr, or warnings (Python shows each warning once per process)."""
    source = ["--data-dir", str(data_dir)] if data_dir is not None else []
    arguments = ["run", *source, "--output-dir", str(output_dir), *map(str, settings)]
    if in_process:
        result = cli_in_process(*arguments)
    else:
        result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), *arguments],
                                capture_output=True, text=True, cwd=ROOT, timeout=900)
    summary_path = output_dir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return result, summary


def cli_in_process(*arguments) -> subprocess.CompletedProcess:
    """`pipeline_runner.py ARGUMENTS` through the command line's own entry point, in this process: what a test of a
    short command (models, rollback, compile) checks is its output and effect, and a process of its own would
    import TensorFlow and TFX again (seconds of CPU each). The libraries' log levels, the environment and the
    unraisable and exception hooks the command sets as it starts are restored after it. A fault the command does
    not turn into its one line gives exit code 1 and its traceback on stderr, as a process would."""
    import contextlib
    import io
    import logging
    import os
    import traceback
    from unittest import mock

    import pipeline_runner

    stdout, stderr = io.StringIO(), io.StringIO()
    loggers = [logging.getLogger(name) for name in ("", "tensorflow", "absl", "apache_beam",
                                                    "apache_beam.runners.common")]
    levels, hooks = [logger.level for logger in loggers], (sys.unraisablehook, sys.excepthook)
    with mock.patch.dict(os.environ), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = pipeline_runner.main([str(argument) for argument in arguments])
        except SystemExit as stop:  # argparse's refusal
            code = stop.code if isinstance(stop.code, int) else 1
        except Exception:  # noqa: BLE001 - what a process would have printed
            traceback.print_exc()
            code = 1
        finally:
            sys.unraisablehook, sys.excepthook = hooks
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
    return subprocess.CompletedProcess(["pipeline_runner.py", *map(str, arguments)], code, stdout.getvalue(),
                                       stderr.getvalue())


def latest_run_states(metadata):
    """{node_id: [state names]} of the newest pipeline_run context, plus the store. `metadata`: a SQLite file's
    path, or a connection or client config."""
    if isinstance(metadata, (metadata_store_pb2.ConnectionConfig, metadata_store_pb2.MetadataStoreClientConfig)):
        config = metadata
    else:
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = str(metadata)
    store = metadata_store.MetadataStore(config)
    run = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: (c.create_time_since_epoch, c.id))
    states = {}
    for execution in store.get_executions_by_context(run.id):
        node = next(c.name.split(".", 1)[1] for c in store.get_contexts_by_execution(execution.id)
                    if c.name.startswith(PIPELINE_NAME + "."))
        states.setdefault(node, []).append(metadata_store_pb2.Execution.State.Name(execution.last_known_state))
    return states, store, run


def evaluator_models(store, run):
    """URIs of the Model artifacts the Evaluator of `run` read (candidate and baseline)."""
    for execution in store.get_executions_by_context(run.id):
        if any(c.name.endswith(".Evaluator") for c in store.get_contexts_by_execution(execution.id)):
            ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                   if e.type == metadata_store_pb2.Event.INPUT]
            model_type = store.get_artifact_type("Model").id
            return {a.uri for a in store.get_artifacts_by_id(ids) if a.type_id == model_type}
    return set()


def tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in pathlib.Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def transform_graph(folder, jpegs_by_class, image_size):
    """A real Transform graph (tf.Transform on Beam) of preprocessing_fn over a few images, as TFX writes it."""
    import functools
    import os

    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from contract import features
    from pipeline import SCHEMA_PATH
    from trainer import preprocessing

    schema = text_format.Parse(open(SCHEMA_PATH).read(), schema_pb2.Schema())
    instances = []
    for label, name in enumerate(features.LABEL_NAMES):
        for jpeg in jpegs_by_class[name]:
            instances.append({features.IMAGE_KEY: [jpeg], features.LABEL_KEY: [label], features.HEIGHT_KEY: [1],
                              features.WIDTH_KEY: [1], features.SOURCE_KEY: [b"x"], features.SHA256_KEY: [b"x"]})
    out = os.path.join(str(folder), "transform_output")
    fn = functools.partial(preprocessing.preprocessing_fn, custom_config={"image_size": image_size})
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=os.path.join(str(folder), "tft_tmp")):
        raw = pipeline | beam.Create(instances)
        transform_fn = (raw, dataset_metadata.DatasetMetadata(schema)) | tft_beam.AnalyzeDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    # TFX's Transform also writes the raw schema; the serving signatures read it.
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                               os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(out)


# The nodes of a pipeline with the default settings.
DEFAULT_NODE_IDS = (node_ids.EXAMPLE_GEN, node_ids.SCHEMA_IMPORTER, node_ids.STATISTICS_GEN, node_ids.EXAMPLE_VALIDATOR,
                    node_ids.PREVIOUS_STATISTICS_RESOLVER, node_ids.ANOMALIES_GATE, node_ids.TRANSFORM,
                    node_ids.HYPERPARAMETERS_RESOLVER, node_ids.TRAINER, node_ids.BASELINE_RESOLVER, node_ids.EVALUATOR,
                    node_ids.PUSHER)


_SERVABLE_TEMPLATES: dict[str, pathlib.Path] = {}


def servable_model(folder, tag: str, keras_wrappers: bool = False) -> str:
    """A small SavedModel in `folder` that TF Serving's loader runs (inference.tf_serving): a serving signature of
    encoded images, its output a constant of `tag`'s own, so that models of different tags differ in their files.
    The pushes, rollbacks and histories of the serving tests need a version TF Serving would run, not a
    MobileNetV2. `keras_wrappers`: its variables tracked by Keras 3's wrappers, as the pipeline exported before
    2026-11-26; `tf.saved_model.load` runs such a model, TF Serving fails every request. Each (tag, wrappers) is
    saved once per process and copied."""
    import shutil
    import tempfile

    key = f"{tag}-{keras_wrappers}"
    if key not in _SERVABLE_TEMPLATES:
        import keras
        import tensorflow as tf

        from contract import features

        dense = keras.layers.Dense(1, bias_initializer=keras.initializers.Constant(len(tag)), name="head")
        dense.build((None, 3))
        module = tf.Module()
        module.weights = list(dense.weights) if keras_wrappers else [weight.value for weight in dense.weights]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGE_INPUT)])
        def serve(images):
            pixels = tf.map_fn(lambda data: tf.cast(tf.io.decode_jpeg(data, channels=3)[0, 0], tf.float32), images,
                               fn_output_signature=tf.TensorSpec([3], tf.float32))
            return {features.PROBABILITY_OUTPUT: tf.sigmoid(dense(pixels / 255.0))[:, 0],
                    "tag": tf.fill(tf.shape(images), tf.constant(tag))}

        template = pathlib.Path(tempfile.mkdtemp(prefix="servable-")) / "model"
        tf.saved_model.save(module, str(template), signatures={features.SERVING_SIGNATURE: serve})
        _SERVABLE_TEMPLATES[key] = template
    shutil.copytree(_SERVABLE_TEMPLATES[key], folder, dirs_exist_ok=True)
    return str(folder)


def drops_a_ctrl_c_then_fails(signum: int = 2) -> None:
    """What TensorFlow's C++ can do with the KeyboardInterrupt of a Python call it made: print it, clear it and fail
    with an error of its own that names no Ctrl-C. `signum`: the signal sent to this process (SIGINT; SIGTERM where
    it is taken as a Ctrl-C)."""
    import os
    import time

    try:
        os.kill(os.getpid(), signum)
        time.sleep(1)  # the handler runs here
    except KeyboardInterrupt:
        pass
    raise RuntimeError("Failed to flatten the structure")
