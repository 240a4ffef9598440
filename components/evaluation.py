"""What TFX's Evaluator wrote, read back: the metrics, and the blessing decision in words.

The words come from the thresholds the Evaluator recorded with its result
(eval_config.json beside the metrics; on a first run, with no baseline, TFX
drops the change threshold and the wording says so), never from a restatement
of the rule (pipeline.blessing), so they cannot disagree with what was applied.
With a baseline, the decision also says whether the two models differ by more
than the noise of the images they were scored on (components.paired_accuracy's
counts, McNemar's exact test).
"""

from __future__ import annotations

import math

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_specs
from tensorflow_model_analysis.writers import eval_config_writer

from components import uncertainty
from components.paired_accuracy import ONLY_BASELINE_RIGHT, ONLY_CANDIDATE_RIGHT

METRICS = ("example_count", "binary_accuracy", "auc", "precision", "recall")
# Within one label every example has the same label: only these mean something.
LABEL_SLICE_METRICS = ("example_count", "binary_accuracy")


def _slice_name(slice_key) -> str | None:
    if not slice_key.single_slice_keys:
        return ""
    parts = []
    for single in slice_key.single_slice_keys:
        value = single.int64_value if single.HasField("int64_value") else single.bytes_value.decode()
        parts.append(f"{single.column}={value}")
    return ",".join(parts)


def read_metrics(evaluation_uri: str) -> tuple[dict, dict, dict | None]:
    """(overall metrics per model, candidate metrics per label slice, confusion matrix)."""
    overall: dict[str, dict[str, float]] = {}
    by_label: dict[str, dict[str, float]] = {}
    confusion = None
    for metrics_for_slice in tfma.load_metrics(evaluation_uri):
        name = _slice_name(metrics_for_slice.slice_key)
        for entry in metrics_for_slice.metric_keys_and_values:
            key = entry.key
            if key.is_diff:
                continue
            model = "baseline" if key.model_name == "baseline" else "candidate"
            if entry.value.HasField("double_value") and key.name in METRICS:
                value = entry.value.double_value.value
                if math.isnan(value):
                    continue
                if name == "":
                    overall.setdefault(model, {})[key.name] = value
                elif model == "candidate" and key.name in LABEL_SLICE_METRICS:
                    by_label.setdefault(name, {})[key.name] = value
            elif (entry.value.HasField("confusion_matrix_at_thresholds") and name == ""
                  and model == "candidate"):
                matrix = entry.value.confusion_matrix_at_thresholds.matrices[0]
                confusion = {"threshold": matrix.threshold, "true_positives": matrix.true_positives,
                             "false_positives": matrix.false_positives, "true_negatives": matrix.true_negatives,
                             "false_negatives": matrix.false_negatives}
    order = {m: i for i, m in enumerate(METRICS)}
    sort = lambda d: dict(sorted(d.items(), key=lambda kv: order.get(kv[0], 99)))  # noqa: E731
    return ({m: sort(v) for m, v in sorted(overall.items(), key=lambda kv: kv[0] != "candidate")},
            {k: sort(v) for k, v in sorted(by_label.items())}, confusion)


def read_paired(evaluation_uri: str) -> dict | None:
    """{only_candidate_right, only_baseline_right, p_value} of the whole split, None without a baseline."""
    counts = {}
    for metrics_for_slice in tfma.load_metrics(evaluation_uri):
        if metrics_for_slice.slice_key.single_slice_keys:
            continue
        for entry in metrics_for_slice.metric_keys_and_values:
            if entry.key.name in (ONLY_CANDIDATE_RIGHT, ONLY_BASELINE_RIGHT) and entry.value.HasField("double_value"):
                counts[entry.key.name] = int(round(entry.value.double_value.value))
    if len(counts) < 2:
        return None
    return {**counts, "p_value": uncertainty.mcnemar_p_value(counts[ONLY_CANDIDATE_RIGHT],
                                                             counts[ONLY_BASELINE_RIGHT])}


def accuracy_interval(metrics: dict[str, float]) -> tuple[float, float] | None:
    """The exact 95% interval of metrics' binary_accuracy on its example_count images."""
    if "binary_accuracy" not in metrics or not metrics.get("example_count"):
        return None
    images = int(metrics["example_count"])
    return uncertainty.accuracy_interval(round(metrics["binary_accuracy"] * images), images)


def paired_words(paired: dict, images: int, refused: bool = False) -> str:
    """Whether the candidate's difference from the baseline is within the noise of the `images` scored; for a
    candidate the thresholds `refused`, what such a difference means for that."""
    only_candidate, only_baseline = (int(round(paired[key])) for key in (ONLY_CANDIDATE_RIGHT, ONLY_BASELINE_RIGHT))
    net = only_candidate - only_baseline
    if net:
        change = f"{abs(net)} image{'' if abs(net) == 1 else 's'} {'more' if net > 0 else 'fewer'} right than the " \
                 f"baseline"
    else:
        change = "as many images right as the baseline"
    verdict = "within the noise of the split" if paired["p_value"] >= uncertainty.SIGNIFICANCE \
        else "more than the noise of the split"
    if refused and paired["p_value"] >= uncertainty.SIGNIFICANCE:
        # The thresholds judge the measured accuracy; the served model is kept on a difference chance could make.
        verdict += " (the candidate may be no worse: the served model stays, as the thresholds ask; more test " \
                   "images would tell them apart, and --max-accuracy-drop sets the drop a run allows)"
    return (f"the candidate gets {change} of {images} ({only_candidate} only it gets right, {only_baseline} only "
            f"the baseline; McNemar's exact p = {paired['p_value']:.2g}): {verdict}")


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
            words.append(f"{name} no {'lower' if higher else 'higher'} than the baseline's" if allowed == 0 else
                         f"{name} at most {allowed:g} {'below' if higher else 'above'} the baseline's")
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
    """Why the Evaluator whose output is at `evaluation_uri` blessed the candidate or not, and, with a
    baseline, whether their difference is more than the noise of the images they were scored on."""
    result = tfma.load_validation_result(evaluation_uri)
    failures = [failure for per_slice in result.metric_validations_per_slice for failure in per_slice.failures]
    if failures:
        words = "; ".join(_describe_failure(f) for f in failures)
    elif not blessed:
        words = "not validated"
    else:
        applied = eval_config_writer.load_eval_run(evaluation_uri)[0]
        with_baseline = any(spec.is_baseline for spec in applied.model_specs)
        words = "met " + " and ".join(threshold_words(applied)) + ("" if with_baseline else "; no baseline yet")
    paired = read_paired(evaluation_uri)
    if paired is not None:
        images = int(read_metrics(evaluation_uri)[0].get("candidate", {}).get("example_count", 0))
        words += "; " + paired_words(paired, images, refused=bool(failures) or not blessed)
    return words
