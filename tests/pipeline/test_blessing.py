"""The blessing rule, and its wording from the thresholds TFMA applies."""

from components import evaluation
from config import PipelineConfig
from pipeline import blessing


def test_the_words_follow_the_configured_thresholds():
    for min_accuracy, drop, words in ((0.8, 0.0, "no lower than the baseline's"),
                                      (0.65, 0.05, "at most 0.05 below the baseline's")):
        config = PipelineConfig().replace(min_accuracy=min_accuracy, max_accuracy_drop=drop)
        assert evaluation.threshold_words(blessing.eval_config(config)) == [
            f"binary_accuracy >= {min_accuracy:g}", f"binary_accuracy {words}"]


def test_the_bar_applies_to_the_whole_eval_set_only():
    (spec,) = blessing.eval_config(PipelineConfig()).metrics_specs
    thresholded = [m for m in spec.metrics if m.per_slice_thresholds or m.HasField("threshold")]
    assert [m.class_name for m in thresholded] == ["BinaryAccuracy"]
    (per_slice,) = thresholded[0].per_slice_thresholds
    assert [s.feature_keys for s in per_slice.slicing_specs] == [[]]  # the overall slice, not one per label
