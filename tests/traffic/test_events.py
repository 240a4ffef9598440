"""KServe's logger events read as pure functions of headers, bytes and JSON: no sink, no server."""

import datetime
import json
import math

import pytest

from tests.traffic.kserve import kserve_headers, request_body
from traffic import events, reasons


def test_a_time_ahead_of_the_sinks_clock_is_recorded_as_received():
    """A record stamped in the future would be the newest of every window until then."""
    now_ms = int(datetime.datetime(2026, 11, 24, 12, tzinfo=datetime.timezone.utc).timestamp() * 1000)
    future = events.parse_event(kserve_headers("request", "a", when="9999-12-31T23:59:59Z"),
                                      request_body([b"x"]), now_ms)
    past = events.parse_event(kserve_headers("request", "b"), request_body([b"x"]), now_ms)
    assert future.time_ms == now_ms and past.time_ms < now_ms


def test_a_request_gives_its_images_in_row_or_columnar_form_and_a_response_its_scores_and_version():
    row = {"instances": [{"b64": "YQ=="}, {"image_bytes": {"b64": "Yg=="}}]}
    columnar = {"inputs": {"image_bytes": [{"b64": "YQ=="}, {"b64": "Yg=="}]}}
    assert events.request_images(row) == events.request_images(columnar) == [b"a", b"b"]
    scores, version = events.response_scores({"model_version": "4", "predictions": [
        {"dog_probability": 0.25, "valid": True}, {"dog_probability": 0.5, "valid": False}, [0.75]]})
    assert scores[0] == 0.25 and math.isnan(scores[1]) and scores[2] == 0.75 and version == 4
    assert events.response_scores({"outputs": {"dog_probability": [0.1, 0.2]}}) == ([0.1, 0.2], None)


@pytest.mark.parametrize("payload, reason", [({"instances": []}, reasons.NOT_A_PREDICTION),
                                             ({"instances": [{"b64": "@@"}]}, reasons.BAD_BASE64),
                                             ({"signature_name": "other", "instances": [{"b64": ""}]},
                                              reasons.OTHER_SIGNATURE),
                                             ({"instances": [{"b64": ""}] * 3}, reasons.TOO_MANY_INSTANCES)])
def test_a_request_that_is_no_prediction_of_this_model_is_refused_with_its_reason(payload, reason):
    with pytest.raises(reasons.Refused) as refused:
        events.request_images(payload, max_instances=2)
    assert refused.value.reason == reason


@pytest.mark.parametrize("valid", ["false", "true", 0, None, [False]])
def test_a_response_whose_valid_is_not_true_or_false_is_refused_not_recorded_as_scored(valid):
    for payload in ({"predictions": [{"dog_probability": 0.3, "valid": valid}]},
                    {"outputs": {"dog_probability": [0.3], "valid": [valid]}}):
        with pytest.raises(reasons.Refused) as refused:
            events.response_scores(payload)
        assert refused.value.reason == reasons.NOT_A_PREDICTION and "is not true or false" in refused.value.detail


@pytest.mark.parametrize("when, named, why", [
    ("yesterday", 'ce-time "yesterday"', "cannot be read as a time"), ("", 'ce-time ""', "cannot be read as a time"),
    ("2026-13-01T00:00:00Z", 'ce-time "2026-13-01T00:00:00Z"', "cannot be read as a time"),
    ("a%0Ab", 'ce-time "a\\nb"', "cannot be read as a time"),
    ("2026-11-24T10:00:00", 'ce-time "2026-11-24T10:00:00"', "has no time zone"),
    ("2026-11-24", 'ce-time "2026-11-24"', "has no time zone")])
def test_a_time_that_is_no_rfc_3339_time_is_refused_naming_the_attribute_in_either_mode(when, named, why):
    headers = kserve_headers("request", "a", when=when)
    document = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
    document["time"] = when.replace("%0A", "\n")
    document["data"] = {"instances": []}
    # a ce- header beside a structured event (a proxy's) leaves it structured: its content type says so
    structured = ({"content-type": "application/cloudevents+json", "ce-traceparent": "00-x"},
                  json.dumps(document).encode())
    for message, shown in (((headers, request_body([b"x"])), named), (structured, named[3:])):
        with pytest.raises(reasons.Refused) as refused:
            events.parse_event(*message, now_ms=2_000_000_000_000)
        assert refused.value.reason == reasons.NOT_A_CLOUDEVENT
        assert refused.value.detail.startswith(f"{shown} {why} (RFC 3339, such as "), refused.value.detail


def test_a_percent_encoded_time_and_a_structured_event_with_a_ce_header_beside_are_read():
    encoded = kserve_headers("request", "a", when="2026-11-24T10%3A00%3A00Z")  # as a header may carry it
    assert events.parse_event(encoded, request_body([b"x"]), now_ms=2_000_000_000_000).time_ms == 1_795_514_400_000
    document = {name[3:]: value for name, value in kserve_headers("request", "a").items() if name.startswith("ce-")}
    document.update(time="2026-11-24T10:00:00Z", data={"instances": []})
    headers = {"content-type": "application/cloudevents+json", "ce-traceparent": "00-x"}  # a proxy's header
    accepted = events.parse_event(headers, json.dumps(document).encode(), now_ms=2_000_000_000_000)
    assert accepted.id == "a" and accepted.time_ms == 1_795_514_400_000
