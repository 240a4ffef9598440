"""A drift check in ML Metadata: a DriftCheck execution that read the served Model and wrote a DriftReport.

Both carry the same custom properties (the verdict, the served version, the window's size, the false-alarm
rate, each test as JSON, where the report and the labeling queue are), so the history of checks is one query
(`get_artifacts_by_type("DriftReport")`), and lineage leads from a served model to every check of its traffic.
"""

from __future__ import annotations

import json
import time

from contract import metadata as metadata_lib
from contract.errors import StorageFaultError, first_line

EXECUTION_TYPE = "DriftCheck"
ARTIFACT_TYPE = "DriftReport"
# Custom properties of both
DRIFT = "drift"  # 1 drift found, 0 not
SERVED_VERSION = "served_version"
WINDOW_IMAGES = "window_images"
FALSE_ALARM_RATE = "false_alarm_rate"
TESTS = "tests"  # JSON: [{name, method, statistic, p_value, threshold, drift, ...}]
QUEUE = "labeling_queue"  # the queue's folder, "" when none was made
CHECKED_AT = "checked_at"
SAID = 200  # characters of a store's error shown


class RecordError(StorageFaultError):
    """The check ran and its report was written, but the store did not take its record; the line says where the
    report is."""


def _set(node, key: str, value) -> None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        node.custom_properties[key].int_value = value
    elif isinstance(value, float):
        node.custom_properties[key].double_value = value
    else:
        node.custom_properties[key].string_value = str(value)


def _named(store: str) -> str:
    """A store as contract.metadata names them (grpc://HOST:PORT, sqlite:///PATH), or a SQLite file's path."""
    return store if "://" in store else metadata_lib.sqlite_store(store)


def record_check(store_path: str, report_uri: str, model_id: int | None, properties: dict) -> int:
    """Records a check in the store `store_path` names (_named); returns the DriftReport artifact's id.
    RecordError (one line) when the store does not take it (locked by another process, a full disk)."""
    try:
        return _put(store_path, report_uri, model_id, properties)
    except Exception as error:  # ml_metadata's errors quote the whole record in their one line: cut short
        said = first_line(error, with_type=True)
        raise RecordError(f"the check could not be recorded in the ML Metadata store {store_path} "
                          f"({said[:SAID] + '...' if len(said) > SAID else said}); its report is {report_uri}: "
                          "run the check again to record it") from None


def _put(store_path: str, report_uri: str, model_id: int | None, properties: dict) -> int:
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_lib.open_store(_named(store_path))
    execution = metadata_store_pb2.Execution(
        type_id=store.put_execution_type(metadata_store_pb2.ExecutionType(name=EXECUTION_TYPE), can_add_fields=True),
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    report = metadata_store_pb2.Artifact(
        type_id=store.put_artifact_type(metadata_store_pb2.ArtifactType(name=ARTIFACT_TYPE), can_add_fields=True),
        uri=report_uri, state=metadata_store_pb2.Artifact.LIVE)
    values = {**properties, CHECKED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for key, value in values.items():
        _set(execution, key, json.dumps(value) if isinstance(value, (list, dict)) else value)
        _set(report, key, json.dumps(value) if isinstance(value, (list, dict)) else value)
    events = [(report, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT))]
    if model_id is not None and model_id >= 0 and store.get_artifacts_by_id([model_id]):
        events.insert(0, (store.get_artifacts_by_id([model_id])[0],
                          metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)))
    _, artifact_ids, _ = store.put_execution(execution, events, [])
    return artifact_ids[-1]


def checks(store_path: str) -> list[dict]:
    """Every recorded check, oldest first, as {property: value} with the report's `uri` and `id`."""
    store = metadata_lib.open_store(_named(store_path), read_only=True)
    try:
        reports = store.get_artifacts_by_type(ARTIFACT_TYPE)
    except Exception:  # a store no check has written to (ml_metadata raises its NotFoundError)
        return []
    result = []
    for report in sorted(reports, key=lambda a: a.id):
        fields = {key: getattr(value, value.WhichOneof("value")) for key, value in report.custom_properties.items()}
        fields[TESTS] = json.loads(fields.get(TESTS, "[]"))
        result.append({"id": report.id, "uri": report.uri, **fields})
    return result
