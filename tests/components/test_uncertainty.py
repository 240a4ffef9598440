"""Exact accuracy intervals and McNemar's paired test, and the TFMA metric that counts the discordant images."""

import math

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from components import evaluation, paired_accuracy, uncertainty
from config import PipelineConfig
from pipeline import blessing


def test_the_interval_of_an_accuracy_has_the_exact_width_for_a_split_of_known_size():
    # All right or all wrong: one side is exact in closed form, (alpha/2) ** (1/n).
    for images in (10, 40, 122):
        low, high = uncertainty.accuracy_interval(images, images)
        assert high == 1.0 and math.isclose(low, 0.025 ** (1 / images), rel_tol=1e-9)
        low, high = uncertainty.accuracy_interval(0, images)
        assert low == 0.0 and math.isclose(high, 1 - 0.025 ** (1 / images), rel_tol=1e-9)
    # 0.635 of 63 images (the figure that had no interval): about +-0.12, as a normal approximation says.
    low, high = uncertainty.accuracy_interval(40, 63)
    assert 0.23 < high - low < 0.26 and low < 40 / 63 < high
    # Narrower with more images, and the floor of 30 eval images gives about +-0.1 at 0.9.
    widths = [np.subtract(*reversed(uncertainty.accuracy_interval(round(0.9 * n), n))) for n in (30, 120, 480)]
    assert widths[0] > widths[1] > widths[2] and 0.2 < widths[0] < 0.3
    with pytest.raises(ValueError, match="correct must be in"):
        uncertainty.accuracy_interval(41, 40)


def test_the_interval_covers_the_true_accuracy_at_least_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        correct = rng.binomial(40, 0.85)
        low, high = uncertainty.accuracy_interval(int(correct), 40)
        covered += low <= 0.85 <= high
    assert covered / 2000 >= 0.95  # exact intervals err on the wide side


def _inputs(labels, candidate, baseline):
    """TFMA's per-example metric inputs of two models, as the Evaluator builds them."""
    return [metric_types.StandardMetricInputs(labels=np.array([label]), predictions={
        "candidate": np.array([c]), "baseline": np.array([b])}, example_weights=np.array([1.0]))
        for label, c, b in zip(labels, candidate, baseline)]


def _paired_counts(labels, candidate, baseline):
    """Runs PairedAccuracy's computations (combiner, then the derived metrics) as TFMA does; the values of the
    keys marked as differences from the baseline."""
    config = blessing.eval_config(PipelineConfig())
    del config.model_specs[:]
    config.model_specs.add(name="candidate", label_key="label", prediction_key="probability")
    config.model_specs.add(name="baseline", label_key="label", prediction_key="probability", is_baseline=True)
    computations = paired_accuracy.PairedAccuracy().computations(eval_config=config,
                                                                 model_names=["candidate", "baseline"])
    combined, derived = computations
    accumulator = combined.combiner.create_accumulator()
    for element in _inputs(labels, candidate, baseline):
        accumulator = combined.combiner.add_input(accumulator, element)
    accumulator = combined.combiner.merge_accumulators([accumulator, combined.combiner.create_accumulator()])
    values = derived.result(combined.combiner.extract_output(accumulator))
    return {key.name: value for key, value in values.items() if key.is_diff}


def _right_and_wrong(images, wrong):
    """Predictions on `images` with label 1 of which the listed indexes are classified wrong."""
    return [0.1 if i in wrong else 0.9 for i in range(images)]


def test_a_candidate_one_image_worse_of_40_is_within_noise_and_one_15_worse_is_not():
    labels = [1] * 40
    baseline = _right_and_wrong(40, wrong={0, 1, 2})
    one_worse = _right_and_wrong(40, wrong={0, 1, 2, 3})
    counts = _paired_counts(labels, one_worse, baseline)
    assert counts == {paired_accuracy.ONLY_CANDIDATE_RIGHT: 0, paired_accuracy.ONLY_BASELINE_RIGHT: 1}
    paired = {**counts, "p_value": uncertainty.mcnemar_p_value(0, 1)}
    assert evaluation.paired_words(paired, 40).endswith("within the noise of the split")
    assert "1 image fewer right than the baseline of 40" in evaluation.paired_words(paired, 40)
    assert evaluation.paired_words(paired, 40, refused=True).endswith(
        "within the noise of the split (the candidate may be no worse: the served model stays, as the thresholds "
        "ask; more test images would tell them apart, and --max-accuracy-drop sets the drop a run allows)")

    fifteen_worse = _right_and_wrong(40, wrong=set(range(18)))
    counts = _paired_counts(labels, fifteen_worse, baseline)
    assert counts == {paired_accuracy.ONLY_CANDIDATE_RIGHT: 0, paired_accuracy.ONLY_BASELINE_RIGHT: 15}
    paired = {**counts, "p_value": uncertainty.mcnemar_p_value(0, 15)}
    assert paired["p_value"] < 0.001
    assert evaluation.paired_words(paired, 40).endswith("more than the noise of the split")


def test_images_both_models_get_right_or_wrong_do_not_count_as_a_difference():
    labels = [0, 0, 1, 1, 1, 0]
    candidate = [0.2, 0.9, 0.8, 0.3, 0.6, 0.4]  # right, wrong, right, wrong, right, right
    baseline = [0.1, 0.7, 0.9, 0.1, 0.2, 0.7]   # right, wrong, right, wrong, wrong, wrong
    assert _paired_counts(labels, candidate, baseline) == {paired_accuracy.ONLY_CANDIDATE_RIGHT: 2,
                                                           paired_accuracy.ONLY_BASELINE_RIGHT: 0}
    assert uncertainty.mcnemar_p_value(0, 0) == 1.0
    assert uncertainty.mcnemar_p_value(7, 7) == 1.0


def test_without_a_baseline_there_is_nothing_to_pair():
    config = blessing.eval_config(PipelineConfig())
    assert paired_accuracy.PairedAccuracy().computations(eval_config=config, model_names=[""]) == []
