"""The blessing rule: eval_config() tells TFMA which metrics to compute and which thresholds a candidate
must meet (TFX's Evaluator blesses it when it meets them all).

Its wording is not restated anywhere: components.evaluation.decision() words the
thresholds the Evaluator recorded with its result, so the text cannot disagree
with the rule that was applied.
"""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from components import paired_accuracy
from config import PipelineConfig
from contract import features


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    """TFMA settings: the metrics, the slices and the two blessing thresholds."""
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": config.evaluation.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -config.evaluation.max_accuracy_drop}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=features.EXAMPLES_SIGNATURE, label_key=features.LABEL_KEY,
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
            # The images only one of candidate and baseline gets right: whether a difference is more than noise.
            tfma.MetricConfig(class_name="PairedAccuracy", module=paired_accuracy.__name__),
        ])],
    )
