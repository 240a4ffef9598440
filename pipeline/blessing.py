"""The blessing rule and its wording, from the same thresholds.

eval_config() tells TFMA which metrics to compute and which thresholds a
candidate must meet (TFX's Evaluator blesses it when it meets them all).
decision() says in words what was decided, from the thresholds the Evaluator
recorded with its result (eval_config.json beside the metrics: on a first run,
with no baseline, TFX drops the change threshold and the wording says so), so
the text cannot disagree with the rule that was applied.
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.writers import eval_config_writer

from config import PipelineConfig
from contract import features
from trainer import export


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA settings: the metrics, the slices and the two blessing thresholds."""
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.evaluation.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.evaluation.max_accuracy_drop}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=export.EXAMPLES_SIGNATURE, label_key=features.LABEL_KEY,
                                    prediction_key=features.PROBABILITY_OUTPUT)],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            # The bar applies to the whole eval set, not to each label slice.
            tfma.MetricConfig(class_name="BinaryAccuracy", per_slice_thresholds=[
                tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=accuracy_threshold)]),
            tfma.MetricConfig(class_name="AUC"),
            tfma.MetricConfig(class_name="Precision"),
            tfma.MetricConfig(class_name="Recall"),
            tfma.MetricConfig(class_name="ConfusionMatrixAtThresholds", config='{"thresholds": [0.5]}'),
        ])],
    )


def _metric_name(metric: tfma.MetricConfig) -> str:
    """The name TFMA gives the metric's values (BinaryAccuracy -> binary_accuracy)."""
    return metric_specs.metric_instance(metric).name


def _bound_words(name: str, threshold) -> list[str]:
    words = []
    if threshold.HasField("value_threshold"):
        value = threshold.value_threshold
        if value.HasField("lower_bound"):
            words.append(f"{name} >= {value.lower_bound.value:g}")
        if value.HasField("upper_bound"):
            words.append(f"{name} <= {value.upper_bound.value:g}")
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        higher = change.direction == tfma.MetricDirection.HIGHER_IS_BETTER
        if change.HasField("absolute"):
            allowed = abs(change.absolute.value)
            words.append(f"{name} at most {allowed:g} {'below' if higher else 'above'} the baseline's")
        if change.HasField("relative"):
            words.append(f"{name} within {abs(change.relative.value):g}x of the baseline's")
    return words


def threshold_words(config: tfma.EvalConfig) -> list[str]:
    """Each threshold of an EvalConfig as words, e.g. 'binary_accuracy >= 0.8'."""
    words = []
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            name = _metric_name(metric)
            if metric.HasField("threshold"):
                words += _bound_words(name, metric.threshold)
            for per_slice in metric.per_slice_thresholds:
                words += _bound_words(name, per_slice.threshold)
    return words


def _describe_failure(failure) -> str:
    value = failure.metric_value.double_value.value
    name = failure.metric_key.name
    if failure.metric_key.is_diff:
        allowed = abs(failure.metric_threshold.change_threshold.absolute.value)
        return f"{name} is {-value:.4f} below the baseline's, more than the allowed drop of {allowed:g}"
    bound = failure.metric_threshold.value_threshold.lower_bound.value
    return f"{name} {value:.4f} is below the minimum {bound:g}"


def decision(evaluation_uri: str, blessed: bool) -> str:
    """Why the Evaluator whose output is at `evaluation_uri` blessed the candidate or not."""
    result = tfma.load_validation_result(evaluation_uri)
    failures = [failure for per_slice in result.metric_validations_per_slice for failure in per_slice.failures]
    if failures:
        return "; ".join(_describe_failure(f) for f in failures)
    if not blessed:
        return "not validated"
    applied = eval_config_writer.load_eval_run(evaluation_uri)[0]
    words = threshold_words(applied)
    with_baseline = any(spec.is_baseline for spec in applied.model_specs)
    return "met " + " and ".join(words) + ("" if with_baseline else "; no baseline yet")
