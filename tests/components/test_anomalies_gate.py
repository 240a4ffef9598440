import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.anomalies_gate import DataAnomaliesError, check_anomalies


def _anomalies(feature, short, description):
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info[feature]
    info.short_description = short
    info.description = description
    info.reason.add(description=description)
    return anomalies


def test_clean_data_passes():
    assert check_anomalies({"train": anomalies_pb2.Anomalies(), "eval": anomalies_pb2.Anomalies()}) == []


def test_anomalies_stop_the_run_with_split_feature_and_reason():
    found = {"train": _anomalies("label", "Out-of-range values", "Unexpectedly large value: 7."),
             "eval": anomalies_pb2.Anomalies()}
    with pytest.raises(DataAnomaliesError) as error:
        check_anomalies(found)
    message = str(error.value)
    assert "[train] feature 'label': Out-of-range values" in message
    assert "Unexpectedly large value: 7." in message and "--allow-anomalies" in message


def test_override_lets_the_run_go_on_but_still_reports():
    found = {"eval": _anomalies("image", "Column dropped", "The feature was present in fewer examples.")}
    assert check_anomalies(found, allow=True) == [
        "[eval] feature 'image': Column dropped (The feature was present in fewer examples.)"]
