"""The report's figures: drawn from the run's records, offline."""

import tensorflow as tf

from contract import features
from reporting import report_figures


def _example(label: int, index: int) -> bytes:
    feature = {
        features.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg-%d" % index])),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        features.SOURCE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"img-%d.jpg" % index])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_sample_images_come_from_both_classes_of_a_class_sorted_split(tmp_path):
    split = tmp_path / "Split-eval"
    split.mkdir()
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for index in range(120):  # all cats, then all dogs
            writer.write(_example(int(index >= 60), index))
    samples = report_figures._eval_jpegs(str(tmp_path), 15)
    assert len(samples) == 15 and len({name for name, _, _ in samples}) == 15
    assert {label for _, _, label in samples} == {0, 1}
    assert samples == report_figures._eval_jpegs(str(tmp_path), 15)  # the same samples on every run


def test_the_training_curves_mark_whole_epochs_only(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(report_figures.plt, "close", saved.append)  # the figure, kept to read its axes
    epochs = [{"epoch": n, "phase": "head" if n < 2 else "fine_tune", "accuracy": 0.5 + n / 10, "loss": 1 - n / 10,
               "val_accuracy": 0.5, "val_loss": 0.9} for n in range(3)]
    report_figures.training_curves({"epochs": epochs, "fine_tune_start_epoch": 2, "best_epoch": 1},
                               tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    for axis in saved[0].axes:
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
