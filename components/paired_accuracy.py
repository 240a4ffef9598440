"""A TFMA metric that compares the candidate with the baseline image by image: which images only one gets right.

TFMA scores both models on the same examples in one pass; this metric's combiner
sees both predictions of each example (as TFMA's own flip-rate metrics do) and
counts the discordant images: those only the candidate classifies right, and
those only the baseline does. McNemar's test on these two counts
(components.uncertainty) tells whether the accuracies differ by more than the
chance of which images the split happened to hold. Both counts are diff metrics
of the candidate, like TFMA's accuracy change; with no baseline there is nothing
to compute.

Named in the EvalConfig by class name and this module (pipeline.blessing).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import apache_beam as beam
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.utils import model_util

ONLY_CANDIDATE_RIGHT = "only_candidate_right"
ONLY_BASELINE_RIGHT = "only_baseline_right"
_COUNTS = "_paired_accuracy_counts"
THRESHOLD = 0.5  # on the probability output, as the accuracy's own


@dataclasses.dataclass
class _Counts:
    only_candidate: float = 0.0
    only_baseline: float = 0.0

    def add(self, other: "_Counts") -> "_Counts":
        self.only_candidate += other.only_candidate
        self.only_baseline += other.only_baseline
        return self


class _PairedCombiner(beam.CombineFn):
    def __init__(self, key, eval_config, candidate: str, baseline: str, output_name: str, example_weighted: bool):
        self._key, self._eval_config = key, eval_config
        self._candidate, self._baseline = candidate, baseline
        self._output_name, self._example_weighted = output_name, example_weighted

    def _right(self, element, model_name: str) -> tuple[bool, float]:
        label, prediction, weight = next(metric_util.to_label_prediction_example_weight(
            inputs=element, eval_config=self._eval_config, model_name=model_name, output_name=self._output_name,
            example_weighted=self._example_weighted, flatten=True, allow_none=False))
        right = bool((float(prediction) > THRESHOLD) == (float(label) > THRESHOLD))
        return right, float(metric_util.safe_to_scalar(weight))

    def create_accumulator(self) -> _Counts:
        return _Counts()

    def add_input(self, accumulator: _Counts, element) -> _Counts:
        candidate_right, weight = self._right(element, self._candidate)
        baseline_right, _ = self._right(element, self._baseline)
        if candidate_right != baseline_right:
            accumulator.add(_Counts(weight, 0.0) if candidate_right else _Counts(0.0, weight))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Counts]) -> _Counts:
        merged = _Counts()
        for accumulator in accumulators:
            merged.add(accumulator)
        return merged

    def extract_output(self, accumulator: _Counts) -> dict:
        return {self._key: accumulator}


class PairedAccuracy(metric_types.Metric):
    """Images only the candidate gets right, and images only the baseline gets right (diff metrics)."""

    def __init__(self, name: str = "paired_accuracy"):
        super().__init__(self._computations, name=name)

    @staticmethod
    def _computations(name=None, eval_config=None, model_names=(), output_names=("",), sub_keys=None,
                      example_weighted=False) -> metric_types.MetricComputations:
        baseline_spec = model_util.get_baseline_model_spec(eval_config)
        if baseline_spec is None:
            return []
        computations = []
        for candidate in model_names:
            if candidate == baseline_spec.name:
                continue
            for output_name in output_names or ("",):
                counts_key = metric_types.MetricKey(name=f"{_COUNTS}_{name}", model_name=candidate,
                                                    output_name=output_name, example_weighted=example_weighted)
                keys = {field: metric_types.MetricKey(name=metric, model_name=candidate, output_name=output_name,
                                                      example_weighted=example_weighted, is_diff=True)
                        for field, metric in (("only_candidate", ONLY_CANDIDATE_RIGHT),
                                              ("only_baseline", ONLY_BASELINE_RIGHT))}
                computations.append(metric_types.MetricComputation(
                    keys=[counts_key], preprocessors=None,
                    combiner=_PairedCombiner(counts_key, eval_config, candidate, baseline_spec.name, output_name,
                                             example_weighted)))

                def result(metrics, counts_key=counts_key, keys=keys):
                    counts = metrics[counts_key]
                    return {key: getattr(counts, field) for field, key in keys.items()}

                computations.append(metric_types.DerivedMetricComputation(keys=list(keys.values()),
                                                                          result=result))
        return computations
