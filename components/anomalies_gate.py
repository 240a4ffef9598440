"""AnomaliesGate: stops the pipeline when the new data is not fit to train on.

ExampleValidator records schema anomalies but never fails a run. This
component reads them, adds the project's own checks on the statistics
(class balance; mean image size drifting from the previous span), and raises
with a message naming each problem, so Transform and Trainer never see bad
data. It passes the schema through: downstream components consume the gate's
schema, which makes the dependency explicit for every orchestrator.
"""


import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

# Not `tfx.v1`: it imports TFX's Google Cloud extensions (Vertex AI's client, BigQuery), which every process that
# loads this component would pay for, each Kubeflow task included; these are the modules it re-exports.
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from contract import features, layout
from contract.errors import RunFailedError

ANOMALIES_FILE = "SchemaDiff.pb"
STATISTICS_FILE = "FeatureStats.pb"
SCHEMA_FILE = "schema.pbtxt"
LABEL_FEATURE = features.LABEL_KEY
SIZE_FEATURES = (features.HEIGHT_KEY, features.WIDTH_KEY)


class DataAnomaliesError(RunFailedError, RuntimeError):
    """The data does not match the schema; the message lists every anomaly."""


def describe_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One readable line per anomaly: split, feature and what is wrong."""
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(r.description or r.short_description for r in info.reason)
            lines.append(f"[{split}] feature '{feature}': {info.short_description or info.description}"
                         + (f" ({reasons})" if reasons else ""))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"[{split}] data set: {info.short_description or info.description}")
    return lines


def _feature(stats: statistics_pb2.DatasetFeatureStatistics, name: str):
    return next((f for f in stats.features if f.path.step == [name] or f.name == name), None)


def class_counts(stats: statistics_pb2.DatasetFeatureStatistics) -> dict[str, int]:
    """{label value: examples}, from the categorical label's top values."""
    feature = _feature(stats, LABEL_FEATURE)
    if feature is None or not feature.HasField("string_stats"):
        return {}
    return {v.value: int(v.frequency) for v in feature.string_stats.top_values}


# A split's counts are named more unbalanced than the bound only when classes exactly at the bound would give counts
# this lopsided less often than this: a held-out split of a few images is lopsided by chance (at a 3:1 bound, 5:1 or
# worse in 6 images 53% of the time), and data within the bound must not stop a nightly run on its span every night,
# whatever bound the user set. One class missing from a held-out split is named from 17 images on (at 3:1:
# 0.75 ** 17), from the training split always; on large splits the ratio decides (800:200 of 1,000: 0.01%).
BALANCE_FALSE_ALARM_RATE = 0.01


def lopsided_by_chance(smallest: int, total: int, max_ratio: float) -> float:
    """How often classes exactly `max_ratio` to 1 give a split of `total` examples whose smaller class has at most
    `smallest` (the exact binomial probability, the smaller class's share 1 / (1 + max_ratio))."""
    from scipy import stats

    return float(stats.binom.cdf(smallest, total, 1 / (1 + max_ratio)))


def class_balance_problems(stats_by_split: dict[str, statistics_pb2.DatasetFeatureStatistics],
                           max_ratio: float, label_values: tuple[str, ...] = features.LABEL_VALUES) -> list[str]:
    problems = []
    for split, stats in sorted(stats_by_split.items()):
        counts = {value: class_counts(stats).get(value, 0) for value in label_values}
        if sum(counts.values()) == 0:
            continue
        smallest, largest = min(counts.values()), max(counts.values())
        if smallest and largest / smallest <= max_ratio:
            continue
        # A class missing from the training split leaves the model nothing to learn it from, whatever the bound.
        missing_from_training = smallest == 0 and split == layout.TRAIN_SPLIT
        if not missing_from_training and (lopsided_by_chance(smallest, sum(counts.values()), max_ratio)
                                          >= BALANCE_FALSE_ALARM_RATE):
            continue
        shown = ", ".join(f"label {k}: {v}" for k, v in counts.items())
        problems.append(f"[{split}] class balance: {shown} (more than {max_ratio:g}:1; --max-class-ratio sets "
                        "the bound)")
    return problems


def eval_size_problems(stats_by_split: dict[str, statistics_pb2.DatasetFeatureStatistics], minimum: int,
                       split: str | None = None) -> list[str]:
    """The split the Evaluator will score (test, or eval in a span without one) must hold `minimum` examples."""
    split = split or layout.judged_split(stats_by_split)
    count = int(stats_by_split[split].num_examples) if split in stats_by_split else 0
    if count >= minimum:
        return []
    return [f"[{split}] only {count} example{'' if count == 1 else 's'}: at least {minimum} are needed to judge a "
            "model (on fewer a model is blessed or rejected by chance; add data, or lower --min-eval-examples)"]


def size_drift_problems(current: dict[str, statistics_pb2.DatasetFeatureStatistics],
                        previous: dict[str, statistics_pb2.DatasetFeatureStatistics], max_drift: float) -> list[str]:
    problems = []
    for split in sorted(set(current) & set(previous)):
        for name in SIZE_FEATURES:
            now, before = _feature(current[split], name), _feature(previous[split], name)
            if now is None or before is None or not before.num_stats.mean:
                continue
            change = now.num_stats.mean / before.num_stats.mean - 1
            if abs(change) > max_drift:
                problems.append(f"[{split}] image {name} drift: mean {now.num_stats.mean:.0f} px against "
                                f"{before.num_stats.mean:.0f} px in the previous span ({change:+.0%}, "
                                f"allowed ±{max_drift:.0%})")
    return problems


def check_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies], allow: bool = False,
                    extra_problems: list[str] = ()) -> list[str]:
    """Raises DataAnomaliesError on any anomaly or problem unless `allow`; returns them all."""
    lines = describe_anomalies(anomalies_by_split) + list(extra_problems)
    if lines and not allow:
        raise DataAnomaliesError(
            f"{len(lines)} data anomal{'y' if len(lines) == 1 else 'ies'} found; stopping before "
            "Transform and Trainer:\n  " + "\n  ".join(lines)
            + "\nFix the data as each line says, or (a local run) rerun with --allow-anomalies to train on it "
              "anyway.")
    return lines


def _read_per_split(artifact, filename: str, proto_class) -> dict:
    """{split: proto} from the per-split files of an artifact."""
    result = {}
    for split in artifact_utils.decode_split_names(artifact.split_names):
        message = proto_class()
        path = os.path.join(artifact_utils.get_split_uri([artifact], split), filename)
        message.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        result[split] = message
    return result


def read_anomalies(anomalies_artifact) -> dict[str, anomalies_pb2.Anomalies]:
    return _read_per_split(anomalies_artifact, ANOMALIES_FILE, anomalies_pb2.Anomalies)


def read_statistics(statistics_artifact) -> dict[str, statistics_pb2.DatasetFeatureStatistics]:
    lists = _read_per_split(statistics_artifact, STATISTICS_FILE, statistics_pb2.DatasetFeatureStatisticsList)
    return {split: stats.datasets[0] for split, stats in lists.items()}


@component
def AnomaliesGate(
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: InputArtifact[standard_artifacts.Schema],
    statistics: InputArtifact[standard_artifacts.ExampleStatistics],
    validated_schema: OutputArtifact[standard_artifacts.Schema],
    previous_statistics: InputArtifact[standard_artifacts.ExampleStatistics] = None,
    allow_anomalies: Parameter[bool] = False,
    max_class_ratio: Parameter[float] = 3.0,
    max_size_drift: Parameter[float] = 0.5,
    min_eval_examples: Parameter[int] = 0,
    code_version: Parameter[str] = "",  # a fingerprint of this code: a change is a cache miss
) -> None:
    current = read_statistics(statistics)
    problems = class_balance_problems(current, max_class_ratio) + eval_size_problems(current, min_eval_examples)
    if previous_statistics is not None:
        problems += size_drift_problems(current, read_statistics(previous_statistics), max_size_drift)
    found = check_anomalies(read_anomalies(anomalies), allow=allow_anomalies, extra_problems=problems)
    validated_schema.set_int_custom_property("anomalies_allowed", len(found))
    tf.io.gfile.copy(os.path.join(schema.uri, SCHEMA_FILE), os.path.join(validated_schema.uri, SCHEMA_FILE),
                     overwrite=True)
