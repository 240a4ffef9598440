import tensorflow as tf

from contract import features
from reporting import run_report


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
    samples = run_report._eval_jpegs(str(tmp_path), 15)
    assert len(samples) == 15 and len({name for name, _, _ in samples}) == 15
    assert {label for _, _, label in samples} == {0, 1}
    assert samples == run_report._eval_jpegs(str(tmp_path), 15)  # the same samples on every run
