"""The sink's state in this process: events matched by id, sampled, bounded while they wait, refused with their
reason, and what it records.
"""

import base64
import json
import logging
import math

import pytest

from tests.traffic.kserve import Clock, kserve_headers, make_sink, request_body, response_body, structured
from traffic import pairing, reasons
from traffic import spans as traffic_spans
from traffic import window as traffic_window


def test_sampling_keeps_or_leaves_out_whole_requests_by_their_id(tmp_path):
    sink = make_sink(tmp_path, sample_rate=0.5, batch_size=1000)
    kept = []
    for i in range(200):
        sink.receive(kserve_headers("request", f"id-{i}"), request_body([b"a", b"b"]))
        answer = sink.receive(kserve_headers("response", f"id-{i}"), response_body([0.1, 0.2]))
        kept.append(answer.get("recorded") == 2)
    assert 70 < sum(kept) < 130 and sink.sampled_out == 200 - sum(kept)
    again = make_sink(tmp_path / "again", sample_rate=0.5)
    assert [again._sampled(f"id-{i}") for i in range(200)] == kept, "the same ids, the same choice"
    sink.writer.flush()
    window = traffic_window.read_window(str(tmp_path / "traffic"))
    assert len(window) == 2 * sum(kept) and traffic_spans.load_report(str(tmp_path / "traffic"), 1).sampled_out == \
        200 - sum(kept)


def test_interleaved_requests_and_responses_are_matched_by_id_and_a_duplicate_id_is_refused(tmp_path):
    sink = make_sink(tmp_path, batch_size=4)
    sink.receive(kserve_headers("request", "first"), request_body([b"first image"]))
    sink.receive(kserve_headers("request", "second"), request_body([b"second image"]))
    with pytest.raises(reasons.Refused, match=reasons.DUPLICATE):
        sink.receive(kserve_headers("request", "second"), request_body([b"again"]))
    sink.receive(kserve_headers("response", "third"), response_body([0.3]))
    with pytest.raises(reasons.Refused, match=reasons.DUPLICATE):
        sink.receive(kserve_headers("response", "third"), response_body([0.3]))
    sink.receive(kserve_headers("response", "second"), response_body([0.2]))
    sink.receive(kserve_headers("response", "first"), response_body([0.1]))
    sink.receive(kserve_headers("request", "third"), request_body([b"third image"]))
    sink.writer.flush()
    window = traffic_window.read_window(str(tmp_path / "traffic"))
    by_id = dict(zip(window.request_ids, zip(window.images, window.scores.tolist())))
    assert by_id == {"first": (b"first image", pytest.approx(0.1)), "second": (b"second image", pytest.approx(0.2)),
                     "third": (b"third image", pytest.approx(0.3))}
    assert sink.refused == {reasons.DUPLICATE: 2}


def test_what_waits_too_long_is_counted_lost_and_said(tmp_path, caplog, monkeypatch):
    # Whatever an earlier command in this process made of the logs (quiet_logs' ERROR level, the sink command's
    # own handler), this test reads the sink's lines.
    monkeypatch.setattr(pairing.logger, "propagate", True)
    caplog.set_level(logging.WARNING, logger=pairing.logger.name)
    clock = Clock()
    sink = make_sink(tmp_path, clock=clock, pending_seconds=30)
    sink.receive(kserve_headers("request", "never answered"), request_body([b"a", b"b", b"c"]))
    sink.receive(kserve_headers("response", "no request"), response_body([0.5]))
    clock.now += 29
    sink.tick()
    assert sink.stats()["lost"] == {}
    clock.now += 1
    sink.tick()
    assert sink.stats()["lost"] == {reasons.NO_RESPONSE: 3, reasons.NO_REQUEST: 1}
    assert "lost 3 image(s): no response in time" in caplog.text
    assert sink.stats()["waiting"] == {"requests": 0, "responses": 0, "bytes": 0}


def test_a_shutdown_with_an_empty_batch_writes_what_it_lost_into_a_span_report_of_no_record(tmp_path):
    sink = make_sink(tmp_path)
    sink.receive(kserve_headers("request", "unanswered"), request_body([b"a", b"b"]))
    sink.close()
    root = str(tmp_path / "traffic")
    assert traffic_spans.committed_spans(root) == [1]
    report = traffic_spans.load_report(root, 1)
    assert report.records == 0 and report.files == {} and report.lost == {reasons.SHUTDOWN: 2}
    assert len(traffic_window.read_window(root)) == 0, "a span of no record gives no window"
    sink = make_sink(tmp_path)
    sink.close()
    assert traffic_spans.committed_spans(root) == [1], "nothing to say: no span"


def test_the_pending_table_is_bounded_by_bytes(tmp_path):
    sink = make_sink(tmp_path, pending_mb=1)
    for i in range(5):
        sink.receive(kserve_headers("request", f"big-{i}"), request_body([b"x" * 300_000]))
    assert sink.stats()["waiting"]["requests"] == 3 and sink.stats()["lost"] == {reasons.PENDING_FULL: 2}
    assert sink.receive(kserve_headers("response", "big-4"), response_body([0.5]))["recorded"] == 1


def test_the_pending_table_counts_what_each_image_and_answer_holds_and_bounds_responses_too(tmp_path):
    sink = make_sink(tmp_path, pending_mb=1, max_instances=10_000)
    tiny = request_body([b"ab"] * 10_000)  # 20 KB of images, but some 0.5 MB of Python objects
    for i in range(4):
        sink.receive(kserve_headers("request", f"tiny-{i}"), tiny)
    assert sink.stats()["waiting"]["requests"] == 1 and sink.stats()["lost"] == {reasons.PENDING_FULL: 30_000}
    for i in range(4):
        sink.receive(kserve_headers("response", f"alone-{i}"), response_body([0.5] * 10_000))
    waiting = sink.stats()["waiting"]
    assert waiting["requests"] + waiting["responses"] == 1 and waiting["bytes"] <= 2**20, waiting
    assert sink.receive(kserve_headers("request", "alone-3"), tiny)["recorded"] == 10_000
    assert sink.stats()["waiting"] == {"requests": 0, "responses": 0, "bytes": 0}
    long_ids = [f"{i:08d}" * 1000 for i in range(200)]  # 8 KB ids, one-byte images: the ids are what is held
    for event_id in long_ids:
        sink.receive(kserve_headers("request", event_id), request_body([b"a"]))
    assert 100 < sink.stats()["waiting"]["requests"] <= 130, sink.stats()["waiting"]


def test_a_columnar_answer_whose_valid_is_no_list_of_its_length_is_refused(tmp_path):
    sink = make_sink(tmp_path, batch_size=1)
    for valid in (5, "no", {"a": 1}, [True, True]):
        body = json.dumps({"outputs": {"dog_probability": [0.5], "valid": valid}}).encode()
        with pytest.raises(reasons.Refused, match=reasons.NOT_A_PREDICTION):
            sink.receive(kserve_headers("response", "odd"), body)
    sink.receive(kserve_headers("request", "ok"), request_body([b"a", b"b"]))
    sink.receive(kserve_headers("response", "ok"), json.dumps({"outputs": {"dog_probability": [0.5, 0.25],
                                                                           "valid": [True, False]}}).encode())
    assert math.isnan(traffic_window.read_window(str(tmp_path / "traffic")).scores.tolist()[1])


def test_a_storage_fault_loses_the_batch_counted_by_reason(tmp_path):
    (tmp_path / "traffic").write_text("a file where the traffic folder belongs")
    sink = make_sink(tmp_path, batch_size=1)
    sink.receive(kserve_headers("request", "r"), request_body([b"a"]))
    sink.receive(kserve_headers("response", "r"), response_body([0.5]))
    lost = sink.stats()["lost"]
    assert list(lost.values()) == [1] and list(lost)[0].startswith("storage error"), lost


def test_the_served_version_comes_from_the_response_when_it_names_one(tmp_path):
    sink = make_sink(tmp_path, batch_size=1)
    sink.receive(kserve_headers("request", "v"), request_body([b"a"]))
    sink.receive(kserve_headers("response", "v"), json.dumps({"model_version": "12", "predictions": [0.25]}).encode())
    window = traffic_window.read_window(str(tmp_path / "traffic"))
    assert window.versions.tolist() == [12] and window.scores.tolist() == [0.25]


def test_answers_that_are_no_probability_are_refused_and_odd_versions_ignored(tmp_path, monkeypatch):
    sink = make_sink(tmp_path, batch_size=1)
    for answer in ([1.5], [10**400], ["0.5"], [True]):
        with pytest.raises(reasons.Refused, match=reasons.NOT_A_PREDICTION):
            sink.receive(kserve_headers("response", "odd"), json.dumps({"predictions": answer}).encode())
    sink.receive(kserve_headers("request", "v"), request_body([b"a"]))
    sink.receive(kserve_headers("response", "v"), json.dumps({"model_version": "\u00b2", "predictions": [1]}).encode())
    window = traffic_window.read_window(str(tmp_path / "traffic"))
    assert window.versions.tolist() == [3] and window.scores.tolist() == [1.0], "'²' is no version: the served one"
    monkeypatch.setattr(pairing, "MAX_WAITING", 2)
    for i in range(4):
        sink.receive(kserve_headers("response", f"alone-{i}"), response_body([0.5]))
    assert sink.stats()["waiting"]["responses"] == 2 and sink.stats()["lost"] == {reasons.PENDING_FULL: 2}


@pytest.mark.parametrize("instance", [{"b64": ""}, {"image_bytes": {"b64": ""}}])
def test_an_empty_image_is_skipped_and_counted_and_the_other_images_of_its_request_recorded(tmp_path, instance):
    """TF Serving answers such a batch in-band (the empty one valid false) with 200, so KServe logs both halves:
    what the model answered for the other images is kept."""
    sink = make_sink(tmp_path, batch_size=1)
    images = [b"first image", b"", b"third image"]
    body = json.dumps({"instances": [{"b64": base64.b64encode(images[0]).decode()}, instance,
                                     {"b64": base64.b64encode(images[2]).decode()}]}).encode()
    assert sink.receive(kserve_headers("request", "empty"), body)["images"] == 3
    answer = sink.receive(kserve_headers("response", "empty"), response_body([0.25, None, 0.75]))
    assert answer == {"id": "empty", "recorded": 2, "skipped": {reasons.EMPTY_IMAGE: 1}}
    assert sink.refused == {} and sink.stats()["lost"] == {reasons.EMPTY_IMAGE: 1}
    window = traffic_window.read_window(str(tmp_path / "traffic"))
    assert sorted(zip(window.request_ids, window.scores.tolist())) == [("empty", 0.25), ("empty", 0.75)]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                  "1999-12-31T23:59:59.999Z"])
def test_a_time_before_the_earliest_a_record_may_carry_is_refused_with_its_reason(tmp_path, when):
    sink = make_sink(tmp_path)
    headers, body = structured("request", "old", request_body([b"a"]))
    event = json.loads(body)
    event["time"] = when
    for attempt in (kserve_headers("request", "old", when=when), request_body([b"a"])), (headers, json.dumps(event)):
        with pytest.raises(reasons.Refused, match=r"is before 2000-01-01T00:00:00\+00:00") as refused:
            sink.receive(*attempt)
        assert refused.value.reason == reasons.TIME_OUT_OF_RANGE and refused.value.status == 400
    assert sink.refused == {reasons.TIME_OUT_OF_RANGE: 2} and sink.stats()["waiting"]["requests"] == 0


def test_an_id_holding_a_lone_surrogate_is_refused_and_valid_text_of_any_plane_taken(tmp_path):
    sink = make_sink(tmp_path, batch_size=1)
    headers, _ = structured("request", "x", request_body([b"a"]))
    lone = '{"specversion": "1.0", "id": "x\\udc80", "type": "org.kubeflow.serving.inference.request", ' \
           '"source": "s", "data": {"instances": [{"b64": "YQ=="}]}}'
    with pytest.raises(reasons.Refused, match=r"\\udc80 at index 1, a lone surrogate") as refused:
        sink.receive(headers, lone.encode())
    assert refused.value.reason == reasons.NOT_TEXT and sink.stats()["waiting"]["requests"] == 0
    paired = "x\U0001f431\u00e9"
    sink.receive(*structured("request", paired, request_body([b"a"])))
    assert sink.receive(*structured("response", paired, response_body([0.5])))["recorded"] == 1
    assert traffic_window.read_window(str(tmp_path / "traffic")).request_ids == [paired]


def test_an_event_of_more_images_or_answers_than_the_limit_is_refused_whole(tmp_path):
    sink = make_sink(tmp_path, max_instances=3)
    with pytest.raises(reasons.Refused, match="4 images, above the limit of 3") as refused:
        sink.receive(kserve_headers("request", "many"), request_body([b"a"] * 4))
    assert refused.value.status == 413
    with pytest.raises(reasons.Refused, match="4 answers"):
        sink.receive(kserve_headers("response", "many"), response_body([0.5] * 4))
    assert sink.refused == {reasons.TOO_MANY_INSTANCES: 2}
    assert sink.receive(kserve_headers("request", "few"), request_body([b"a"] * 3))["images"] == 3
