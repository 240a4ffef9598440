"""Bad data stops the run before Transform and Trainer, and nothing is pushed.

1. A good span: trained, blessed, pushed as version 1.
2. Labels broken at the source (every dog filed as a cat): the class-balance
   check stops the run.
3. A span written by another tool with labels outside {0, 1}: ExampleValidator's
   schema check stops the run, naming the feature.
"""

import shutil

import pytest
import tensorflow as tf

from contract import features
from ingest import synthetic
from pipeline import pipeline as pipeline_lib
from tests.helpers import TINY, latest_run_states, run_cli, tree_digest

pytestmark = pytest.mark.e2e

# TFLite export is checked by test_local_pipeline
SETTINGS = [*TINY, "--min-accuracy", "0", "--no-tflite"]
STOPPED_BEFORE = {pipeline_lib.TRANSFORM, pipeline_lib.TRAINER, pipeline_lib.EVALUATOR, pipeline_lib.PUSHER}


def _example(jpeg: bytes, label: int, name: str) -> bytes:
    feature = {
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        features.HEIGHT_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[200])),
        features.WIDTH_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[200])),
        features.SOURCE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        features.SHA256_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("gate")
    out, good, all_cats = base / "out", base / "good", base / "all_cats"
    synthetic.write_demo_images(good, 16)
    (all_cats / "cat").mkdir(parents=True)
    for path in sorted(good.rglob("*.jpg")):
        shutil.copy(path, all_cats / "cat" / path.name)
    record = {"out": out}
    record["good"], record["good_summary"] = run_cli(good, out, *SETTINGS)
    record["served"] = tree_digest(out / "serving_model")

    record["all_cats"], record["all_cats_summary"] = run_cli(all_cats, out, *SETTINGS)
    record["all_cats_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["served_after_all_cats"] = tree_digest(out / "serving_model")

    span = out / "examples" / "span-3"
    for split, labels in (("train", [0, 1, 5, 7] * 4), ("eval", [0, 1, 5, 1])):
        (span / split).mkdir(parents=True)
        jpegs = [synthetic.render_image("cat", i) for i in range(len(labels))]
        with tf.io.TFRecordWriter(str(span / split / "other-tool.tfrecord.gz"), "GZIP") as writer:
            for i, (jpeg, label) in enumerate(zip(jpegs, labels)):
                writer.write(_example(jpeg, label, f"{split}/{i}.jpg"))
    record["bad_labels"], record["bad_labels_summary"] = run_cli(None, out, *SETTINGS)
    record["bad_labels_states"], _, _ = latest_run_states(out / "metadata.sqlite")
    record["served_after_bad_labels"] = tree_digest(out / "serving_model")
    return record


def test_good_span_is_pushed(runs):
    assert runs["good"].returncode == 0, runs["good"].stderr[-3000:]
    assert runs["good_summary"]["pushed_version"] == 1


def test_labels_broken_at_the_source_stop_before_training(runs):
    result, summary = runs["all_cats"], runs["all_cats_summary"]
    assert result.returncode == 1
    assert summary["ingest"]["span"] == 2
    assert "class balance" in summary["error"] and "label 1: 0" in summary["error"]
    states = runs["all_cats_states"]
    assert states[pipeline_lib.ANOMALIES_GATE] == ["FAILED"]
    assert not STOPPED_BEFORE & set(states), f"ran past the gate: {states}"
    assert runs["served_after_all_cats"] == runs["served"]


def test_out_of_domain_labels_from_another_tool_stop_before_training(runs):
    result, summary = runs["bad_labels"], runs["bad_labels_summary"]
    assert result.returncode == 1, result.stdout[-2000:]
    assert "running on the spans" in result.stdout and "span 3" in result.stdout
    # a span without an ingest report has an unknown size: its data components ran in worker processes
    assert summary["beam_args"] == ["--direct_running_mode=multi_processing", "--direct_num_workers=0"]
    assert "feature 'label'" in summary["error"]
    states = runs["bad_labels_states"]
    assert states[pipeline_lib.ANOMALIES_GATE] == ["FAILED"]
    assert not STOPPED_BEFORE & set(states)
    assert runs["served_after_bad_labels"] == runs["served"]
