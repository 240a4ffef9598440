"""AnomaliesGate: stops the pipeline when ExampleValidator found anomalies.

ExampleValidator records anomalies but never fails a run. This component
reads them and raises with a message naming each one, so Transform and
Trainer never see bad data. It passes the schema through: downstream
components consume the gate's schema, which makes the dependency explicit
for every orchestrator.
"""


import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

ANOMALIES_FILE = "SchemaDiff.pb"
SCHEMA_FILE = "schema.pbtxt"


class DataAnomaliesError(RuntimeError):
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


def check_anomalies(anomalies_by_split: dict[str, anomalies_pb2.Anomalies], allow: bool = False) -> list[str]:
    """Raises DataAnomaliesError on any anomaly unless `allow`; returns them."""
    lines = describe_anomalies(anomalies_by_split)
    if lines and not allow:
        raise DataAnomaliesError(
            f"{len(lines)} data anomal{'y' if len(lines) == 1 else 'ies'} found; stopping before "
            "Transform and Trainer:\n  " + "\n  ".join(lines)
            + "\nFix the data, or rerun with --allow-anomalies to train on it anyway.")
    return lines


def read_anomalies(anomalies_artifact) -> dict[str, anomalies_pb2.Anomalies]:
    """{split: Anomalies} from an ExampleAnomalies artifact."""
    result = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies_artifact], split), ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(tf.io.gfile.GFile(path, "rb").read())
        result[split] = anomalies
    return result


@tfx.dsl.components.component
def AnomaliesGate(
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    allow_anomalies: tfx.dsl.components.Parameter[bool] = False,
) -> None:
    found = check_anomalies(read_anomalies(anomalies), allow=allow_anomalies)
    validated_schema.set_int_custom_property("anomalies_allowed", len(found))
    tf.io.gfile.copy(os.path.join(schema.uri, SCHEMA_FILE), os.path.join(validated_schema.uri, SCHEMA_FILE),
                     overwrite=True)
