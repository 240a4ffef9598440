"""The traffic sink as a real HTTP server on loopback, fed events in KServe's inference logger format.

KServe's agent (pkg/logger of kserve/kserve) sends binary-mode CloudEvents:
ce-specversion, ce-id (the same for a request and its response), ce-type
org.kubeflow.serving.inference.request / .response, ce-source, ce-time,
ce-recordedtime and the extensions inferenceservicename, namespace,
component, endpoint and metadata, with the request's Content-Type and the body
as sent or as TF Serving answered. Structured mode is the same event as one
JSON document.
"""

import base64
import datetime
import json
import logging
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from contract import layout, traffic
from inference import traffic_sink
from inference.sink_settings import SinkSettings, SinkSettingsError
from tests.helpers import ROOT

SOURCE = "http://cats-vs-dogs-predictor.default/"


def kserve_headers(kind: str, event_id: str, when: str = "2026-11-24T10:00:00.123456789Z") -> dict:
    """The headers KServe's logger worker sends (binary mode, cloudevents sdk-go)."""
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": f"org.kubeflow.serving.inference.{kind}",
            "ce-source": SOURCE, "ce-time": when, "ce-recordedtime": when, "ce-inferenceservicename": "cats-vs-dogs",
            "ce-namespace": "default", "ce-component": "predictor", "ce-endpoint": "", "ce-metadata": "{}",
            "content-type": "application/json"}


def request_body(images: list[bytes], nested: bool = False) -> bytes:
    instances = [{"image_bytes": {"b64": base64.b64encode(i).decode()}} if nested
                 else {"b64": base64.b64encode(i).decode()} for i in images]
    return json.dumps({"instances": instances}).encode()


def response_body(scores: list[float | None]) -> bytes:
    """TF Serving's row-format answer of serving_default (an invalid image: NaN and valid false)."""
    return json.dumps({"predictions": [
        {"dog_probability": float("nan") if s is None else s, "class_name": "" if s is None else "dog",
         "valid": s is not None, "error": "cannot decode" if s is None else ""} for s in scores]}).encode()


def structured(kind: str, event_id: str, body: bytes, as_base64: bool = False) -> tuple[dict, bytes]:
    event = {"specversion": "1.0", "id": event_id, "type": f"org.kubeflow.serving.inference.{kind}",
             "source": SOURCE, "time": "2026-11-24T10:00:03Z", "datacontenttype": "application/json",
             "inferenceservicename": "cats-vs-dogs"}
    if as_base64:
        event["data_base64"] = base64.b64encode(body).decode()
    else:
        event["data"] = json.loads(body)
    return {"content-type": "application/cloudevents+json"}, json.dumps(event).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """`traffic-sink` in a subprocess on a free loopback port."""

    def __init__(self, root: pathlib.Path, *flags: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root", str(root), "--port",
             str(self.port), *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.process.communicate()
            try:
                if self.client.get("/healthz").json() == {"ok": True}:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the sink did not start"
            time.sleep(0.2)

    def post(self, headers: dict, body: bytes) -> httpx.Response:
        return self.client.post("/", headers=headers, content=body)

    def stats(self) -> dict:
        return self.client.get("/stats").json()

    def stop(self, sig=signal.SIGTERM) -> tuple[int, str, str]:
        self.client.close()
        self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / layout.ROOT_MARKER).write_text("{}")
    serving = folder / "serving_model"
    serving.mkdir()
    from contract import served
    served.write_config(str(serving), served.ServingConfig(served.MODEL_NAME, str(serving), 7))
    return folder


MALFORMED = {
    "no ce-id": ({k: v for k, v in kserve_headers("request", "x").items() if k != "ce-id"}, request_body([b"i"]),
                 traffic_sink.NOT_A_CLOUDEVENT),
    "bad ce-time": ({**kserve_headers("request", "x"), "ce-time": "yesterday"}, request_body([b"i"]),
                    traffic_sink.NOT_A_CLOUDEVENT),
    "not a CloudEvent": ({"content-type": "application/json"}, b'{"instances": []}', traffic_sink.NOT_A_CLOUDEVENT),
    "wrong type": ({**kserve_headers("request", "x"), "ce-type": "com.example.other"}, request_body([b"i"]),
                   traffic_sink.WRONG_TYPE),
    "bad JSON": (kserve_headers("request", "x"), b'{"instances": [', traffic_sink.BAD_JSON),
    "bad base64": (kserve_headers("request", "x"), b'{"instances": [{"b64": "@@@"}]}', traffic_sink.BAD_BASE64),
    "not an image": (kserve_headers("request", "x"), b'{"instances": [[1, 2, 3]]}', traffic_sink.NOT_A_PREDICTION),
    "other signature": (kserve_headers("request", "x"), b'{"signature_name": "serving_examples", "instances": '
                                                        b'[{"b64": "AA=="}]}', traffic_sink.OTHER_SIGNATURE),
    "no predictions": (kserve_headers("response", "y"), b'{"error": "x"}', traffic_sink.NOT_A_PREDICTION),
    "too large": (kserve_headers("request", "x"), b"{" + b" " * (2 << 20) + b"}", traffic_sink.TOO_LARGE),
}


def test_events_in_both_modes_are_matched_by_id_malformed_ones_refused_and_sigterm_publishes(root, demo_jpegs):
    cats, dogs = demo_jpegs["cat"], demo_jpegs["dog"]
    sink = Sink(root, "--batch-size", "100", "--max-event-mb", "1")
    try:
        # Binary mode, the request first.
        assert sink.post(kserve_headers("request", "a"), request_body(cats[:2])).json()["waiting_for"] == "response"
        assert sink.post(kserve_headers("response", "a"), response_body([0.1, 0.2])).json() == {"id": "a",
                                                                                               "recorded": 2}
        # KServe's workers send concurrently: a response may come first. The nested instance form, one invalid.
        sink.post(kserve_headers("response", "b", "2026-11-24T10:00:02Z"), response_body([0.9, None]))
        assert sink.post(kserve_headers("request", "b", "2026-11-24T10:00:02Z"),
                         request_body(dogs[:2], nested=True)).json() == {"id": "b", "recorded": 2}
        # Structured mode, data as JSON and as data_base64.
        sink.post(*structured("request", "c", request_body([dogs[2]])))
        assert sink.post(*structured("response", "c", response_body([0.8]), as_base64=True)).json()["recorded"] == 1
        for name, (headers, body, reason) in MALFORMED.items():
            answer = sink.post(headers, body)
            assert 400 <= answer.status_code < 500 and answer.json()["refused"] == reason, (name, answer.text)
        # An answer that does not fit its request: refused, and its request's image counted lost.
        sink.post(kserve_headers("request", "odd"), request_body([cats[2]]))
        mismatch = sink.post(kserve_headers("response", "odd"), response_body([0.5, 0.6]))
        assert mismatch.status_code == 400 and mismatch.json()["refused"] == traffic_sink.MISMATCH
        stats = sink.stats()
        assert (stats["images_received"], stats["open_batch"], stats["recorded"]) == (6, 5, 0)
        assert traffic.committed_spans(str(root / "traffic")) == [], "the batch is open: nothing published yet"
    finally:
        code, out, err = sink.stop(signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert "traffic sink: stopped; 5 images recorded in 1 span(s)" in out
    window = traffic.read_window(str(root / "traffic"))
    assert window.request_ids == ["a", "a", "b", "b", "c"]
    assert window.images == cats[:2] + dogs[:3], "the images as the client sent them"
    assert window.scores[:3].tolist() == pytest.approx([0.1, 0.2, 0.9]) and math.isnan(window.scores[3])
    assert window.versions.tolist() == [7] * 5, "the version the root's serving config names"
    assert window.times_ms[0] == int(datetime.datetime(2026, 11, 24, 10, 0, 0, 123000, datetime.timezone.utc)
                                     .timestamp() * 1000) and window.origins == ["kserve"] * 5

    expected = {}
    for _, _, reason in MALFORMED.values():
        expected[reason] = expected.get(reason, 0) + 1
    expected[traffic_sink.MISMATCH] = 1
    assert stats["refused"] == expected and stats["lost"] == {traffic_sink.MISMATCH: 1}
    assert "refused an event: bad base64" in err and "lost 1 image(s): response does not match" in err
    report = traffic.load_report(str(root / "traffic"), 1)
    assert report.refused == expected and report.lost == {traffic_sink.MISMATCH: 1} and report.origins == ["kserve"]


def test_a_sink_killed_mid_batch_leaves_no_span_and_the_next_start_removes_its_staging(root):
    traffic_root = root / "traffic"
    sink = Sink(root, "--batch-size", "1000")  # 256 images a file: the batch's first file is staged at 256
    for i in range(30):
        images = [f"image {i}-{k}".encode() for k in range(10)]
        sink.post(kserve_headers("request", f"r{i}"), request_body(images))
        sink.post(kserve_headers("response", f"r{i}"), response_body([0.5] * 10))
    assert sink.stats()["open_batch"] == 300
    with pytest.raises(traffic_sink.SinkBusyError, match="another traffic sink records into"):
        traffic_sink.start(str(root), SinkSettings())  # would remove the running sink's batch as a killed one's
    code, _, _ = sink.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    (staged,) = [p for p in traffic_root.iterdir() if p.name != traffic_sink.SINK_LOCK]
    assert staged.name.startswith(".traffic-") and [p.name for p in staged.iterdir()] == ["traffic-0.tfrecord"]
    assert traffic.committed_spans(str(traffic_root)) == [] and len(traffic.read_window(str(traffic_root))) == 0

    (traffic_root / "span-1").mkdir()  # what a writer killed between its rename and its report leaves
    (traffic_root / "span-1" / "traffic-0.tfrecord").write_bytes(traffic.tfrecord_bytes([b"lost"]))
    old = time.time() - traffic.PUBLISH_GRACE_SECONDS - 60  # no writer is still publishing it
    for path in (traffic_root / "span-1", traffic_root / "span-1" / "traffic-0.tfrecord"):
        os.utime(path, (old, old))
    again = Sink(root, "--batch-size", "1000")
    try:
        assert not staged.exists(), "the next start removes what the killed sink staged"
        again.post(kserve_headers("request", "after"), request_body([b"after"]))
        again.post(kserve_headers("response", "after"), response_body([0.4]))
    finally:
        code, _, err = again.stop()
    assert code == 0 and f"removed {staged}" in err
    assert f"{traffic_root / 'span-1'} is no committed span (no traffic_report.json" in err, err
    assert f"moved to {traffic.aside_dir(str(traffic_root))}/span-1-" in err
    assert traffic.read_window(str(traffic_root)).request_ids == ["after"]
    assert traffic.committed_spans(str(traffic_root)) == [2], "the number of the span moved aside is not used again"


def test_a_folder_that_is_not_a_pipeline_root_is_refused_in_one_line(tmp_path):
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    empty = tmp_path / "empty"
    for folder, said in ((mine, "is not empty and is not a root of this pipeline"),
                         (empty, "is not a root of this pipeline yet")):
        result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root",
                                 str(folder), "--port", str(_free_port())], cwd=ROOT, capture_output=True, text=True,
                                timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and said in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and not empty.exists()


def test_a_traffic_folder_that_is_a_link_is_refused_and_the_folder_it_points_at_untouched(root, tmp_path):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / ".traffic-mine").mkdir()  # named as the sink's staging folders are, which its start removes
    (root / "traffic").symlink_to(mine)
    result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root", str(root),
                             "--port", str(_free_port())], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "traffic is a symbolic link" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert [p.name for p in mine.iterdir()] == [".traffic-mine"]


# --- in-process: the parts that need no server ------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _sink(tmp_path, clock=None, **settings) -> traffic_sink.TrafficSink:
    return traffic_sink.TrafficSink(str(tmp_path / "traffic"), SinkSettings(**settings), lambda: 3,
                                    clock=clock or Clock())


def test_sampling_keeps_or_leaves_out_whole_requests_by_their_id(tmp_path):
    sink = _sink(tmp_path, sample_rate=0.5, batch_size=1000)
    kept = []
    for i in range(200):
        sink.receive(kserve_headers("request", f"id-{i}"), request_body([b"a", b"b"]))
        answer = sink.receive(kserve_headers("response", f"id-{i}"), response_body([0.1, 0.2]))
        kept.append(answer.get("recorded") == 2)
    assert 70 < sum(kept) < 130 and sink.sampled_out == 200 - sum(kept)
    again = _sink(tmp_path / "again", sample_rate=0.5)
    assert [again._sampled(f"id-{i}") for i in range(200)] == kept, "the same ids, the same choice"
    sink.writer.flush()
    window = traffic.read_window(str(tmp_path / "traffic"))
    assert len(window) == 2 * sum(kept) and traffic.load_report(str(tmp_path / "traffic"), 1).sampled_out == \
        200 - sum(kept)


def test_interleaved_requests_and_responses_are_matched_by_id_and_a_duplicate_id_is_refused(tmp_path):
    sink = _sink(tmp_path, batch_size=4)
    sink.receive(kserve_headers("request", "first"), request_body([b"first image"]))
    sink.receive(kserve_headers("request", "second"), request_body([b"second image"]))
    with pytest.raises(traffic_sink.Refused, match=traffic_sink.DUPLICATE):
        sink.receive(kserve_headers("request", "second"), request_body([b"again"]))
    sink.receive(kserve_headers("response", "third"), response_body([0.3]))
    with pytest.raises(traffic_sink.Refused, match=traffic_sink.DUPLICATE):
        sink.receive(kserve_headers("response", "third"), response_body([0.3]))
    sink.receive(kserve_headers("response", "second"), response_body([0.2]))
    sink.receive(kserve_headers("response", "first"), response_body([0.1]))
    sink.receive(kserve_headers("request", "third"), request_body([b"third image"]))
    sink.writer.flush()
    window = traffic.read_window(str(tmp_path / "traffic"))
    by_id = dict(zip(window.request_ids, zip(window.images, window.scores.tolist())))
    assert by_id == {"first": (b"first image", pytest.approx(0.1)), "second": (b"second image", pytest.approx(0.2)),
                     "third": (b"third image", pytest.approx(0.3))}
    assert sink.refused == {traffic_sink.DUPLICATE: 2}


def test_a_time_ahead_of_the_sinks_clock_is_recorded_as_received():
    """A record stamped in the future would be the newest of every window until then."""
    now_ms = int(datetime.datetime(2026, 11, 24, 12, tzinfo=datetime.timezone.utc).timestamp() * 1000)
    future = traffic_sink.parse_event(kserve_headers("request", "a", when="9999-12-31T23:59:59Z"),
                                      request_body([b"x"]), now_ms)
    past = traffic_sink.parse_event(kserve_headers("request", "b"), request_body([b"x"]), now_ms)
    assert future.time_ms == now_ms and past.time_ms < now_ms


def test_what_waits_too_long_is_counted_lost_and_said(tmp_path, caplog, monkeypatch):
    # Whatever an earlier command in this process made of the logs (quiet_logs' ERROR level, the sink command's
    # own handler), this test reads the sink's lines.
    monkeypatch.setattr(traffic_sink.logger, "propagate", True)
    caplog.set_level(logging.WARNING, logger=traffic_sink.logger.name)
    clock = Clock()
    sink = _sink(tmp_path, clock=clock, pending_seconds=30)
    sink.receive(kserve_headers("request", "never answered"), request_body([b"a", b"b", b"c"]))
    sink.receive(kserve_headers("response", "no request"), response_body([0.5]))
    clock.now += 29
    sink.tick()
    assert sink.stats()["lost"] == {}
    clock.now += 1
    sink.tick()
    assert sink.stats()["lost"] == {traffic_sink.NO_RESPONSE: 3, traffic_sink.NO_REQUEST: 1}
    assert "lost 3 image(s): no response in time" in caplog.text
    assert sink.stats()["waiting"] == {"requests": 0, "responses": 0, "bytes": 0}


def test_a_shutdown_with_an_empty_batch_writes_what_it_lost_into_a_span_report_of_no_record(tmp_path):
    sink = _sink(tmp_path)
    sink.receive(kserve_headers("request", "unanswered"), request_body([b"a", b"b"]))
    sink.close()
    root = str(tmp_path / "traffic")
    assert traffic.committed_spans(root) == [1]
    report = traffic.load_report(root, 1)
    assert report.records == 0 and report.files == {} and report.lost == {traffic_sink.SHUTDOWN: 2}
    assert len(traffic.read_window(root)) == 0, "a span of no record gives no window"
    sink = _sink(tmp_path)
    sink.close()
    assert traffic.committed_spans(root) == [1], "nothing to say: no span"


def test_the_pending_table_is_bounded_by_bytes(tmp_path):
    sink = _sink(tmp_path, pending_mb=1)
    for i in range(5):
        sink.receive(kserve_headers("request", f"big-{i}"), request_body([b"x" * 300_000]))
    assert sink.stats()["waiting"]["requests"] == 3 and sink.stats()["lost"] == {traffic_sink.PENDING_FULL: 2}
    assert sink.receive(kserve_headers("response", "big-4"), response_body([0.5]))["recorded"] == 1


def test_the_pending_table_counts_what_each_image_and_answer_holds_and_bounds_responses_too(tmp_path):
    sink = _sink(tmp_path, pending_mb=1, max_instances=10_000)
    tiny = request_body([b"ab"] * 10_000)  # 20 KB of images, but some 0.5 MB of Python objects
    for i in range(4):
        sink.receive(kserve_headers("request", f"tiny-{i}"), tiny)
    assert sink.stats()["waiting"]["requests"] == 1 and sink.stats()["lost"] == {traffic_sink.PENDING_FULL: 30_000}
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
    sink = _sink(tmp_path, batch_size=1)
    for valid in (5, "no", {"a": 1}, [True, True]):
        body = json.dumps({"outputs": {"dog_probability": [0.5], "valid": valid}}).encode()
        with pytest.raises(traffic_sink.Refused, match=traffic_sink.NOT_A_PREDICTION):
            sink.receive(kserve_headers("response", "odd"), body)
    sink.receive(kserve_headers("request", "ok"), request_body([b"a", b"b"]))
    sink.receive(kserve_headers("response", "ok"), json.dumps({"outputs": {"dog_probability": [0.5, 0.25],
                                                                           "valid": [True, False]}}).encode())
    assert math.isnan(traffic.read_window(str(tmp_path / "traffic")).scores.tolist()[1])


def _raw_event(port: int, event_id: str, size: int, sent: int) -> socket.socket:
    """A connection that has sent the headers of a `size`-byte request event and `sent` bytes of its body."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", event_id).items())
    connection.sendall(f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n{head}\r\n".encode())
    connection.sendall(b" " * sent)
    return connection


def test_bodies_arriving_at_once_are_bounded_across_connections_and_a_slow_one_is_refused(tmp_path, monkeypatch):
    import threading

    import uvicorn

    monkeypatch.setattr(traffic_sink, "BODY_SECONDS", 3.0)
    sink = _sink(tmp_path, max_event_mb=1)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(traffic_sink.make_app(sink), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        # Each sender holds almost a whole event's body: one more sender than ARRIVING_EVENTS is refused at once.
        slow = [_raw_event(port, f"slow-{i}", 2**20, 2**20 - 1) for i in range(traffic_sink.ARRIVING_EVENTS)]
        time.sleep(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            busy = client.post("/", headers=kserve_headers("request", "one more"), content=request_body([b"x"] * 9000))
            assert busy.status_code == 503 and busy.json()["refused"] == traffic_sink.BUSY
            answers = [connection.recv(200) for connection in slow]  # then each slow one, refused
            assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
            assert client.post("/", headers=kserve_headers("request", "after"),
                               content=request_body([b"x"])).status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
    assert sink.refused == {traffic_sink.BUSY: 1, traffic_sink.TOO_SLOW: traffic_sink.ARRIVING_EVENTS}


def test_a_fifo_where_the_sink_lock_belongs_does_not_hang_the_start(tmp_path):
    import threading

    (tmp_path / "traffic").mkdir()
    os.mkfifo(tmp_path / "traffic" / traffic_sink.SINK_LOCK)
    held = []
    thread = threading.Thread(target=lambda: held.append(traffic_sink._hold_sink_lock(str(tmp_path / "traffic"))),
                              daemon=True)  # opening a FIFO for reading waits for a writer, unless non-blocking
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(held) == 1
    os.close(held[0])


def test_a_storage_fault_loses_the_batch_counted_by_reason(tmp_path):
    (tmp_path / "traffic").write_text("a file where the traffic folder belongs")
    sink = _sink(tmp_path, batch_size=1)
    sink.receive(kserve_headers("request", "r"), request_body([b"a"]))
    sink.receive(kserve_headers("response", "r"), response_body([0.5]))
    lost = sink.stats()["lost"]
    assert list(lost.values()) == [1] and list(lost)[0].startswith("storage error"), lost


def test_the_served_version_comes_from_the_response_when_it_names_one(tmp_path):
    sink = _sink(tmp_path, batch_size=1)
    sink.receive(kserve_headers("request", "v"), request_body([b"a"]))
    sink.receive(kserve_headers("response", "v"), json.dumps({"model_version": "12", "predictions": [0.25]}).encode())
    window = traffic.read_window(str(tmp_path / "traffic"))
    assert window.versions.tolist() == [12] and window.scores.tolist() == [0.25]


def test_answers_that_are_no_probability_are_refused_and_odd_versions_ignored(tmp_path, monkeypatch):
    sink = _sink(tmp_path, batch_size=1)
    for answer in ([1.5], [10**400], ["0.5"], [True]):
        with pytest.raises(traffic_sink.Refused, match=traffic_sink.NOT_A_PREDICTION):
            sink.receive(kserve_headers("response", "odd"), json.dumps({"predictions": answer}).encode())
    sink.receive(kserve_headers("request", "v"), request_body([b"a"]))
    sink.receive(kserve_headers("response", "v"), json.dumps({"model_version": "\u00b2", "predictions": [1]}).encode())
    window = traffic.read_window(str(tmp_path / "traffic"))
    assert window.versions.tolist() == [3] and window.scores.tolist() == [1.0], "'²' is no version: the served one"
    monkeypatch.setattr(traffic_sink, "MAX_WAITING", 2)
    for i in range(4):
        sink.receive(kserve_headers("response", f"alone-{i}"), response_body([0.5]))
    assert sink.stats()["waiting"]["responses"] == 2 and sink.stats()["lost"] == {traffic_sink.PENDING_FULL: 2}


@pytest.mark.parametrize("settings, flag", [({"batch_size": 0}, "--batch-size"),
                                            ({"sample_rate": 0.0}, "--sample-rate"),
                                            ({"batch_seconds": float("nan")}, "--batch-seconds"),
                                            ({"max_instances": 0}, "--max-instances"),
                                            ({"max_instances": 10**400}, "--max-instances"),
                                            ({"batch_size": 10**400}, "--batch-size"),
                                            ({"pending_mb": 1e300}, "--pending-mb"),
                                            ({"header_seconds": 0.0}, "--header-seconds"),
                                            ({"max_connections": 10**400}, "--max-connections")])
def test_settings_that_cannot_work_are_refused_with_their_flag(settings, flag):
    with pytest.raises(SinkSettingsError, match=flag):
        SinkSettings(**settings)


@pytest.mark.parametrize("instance", [{"b64": ""}, {"image_bytes": {"b64": ""}}])
def test_an_empty_image_is_skipped_and_counted_and_the_other_images_of_its_request_recorded(tmp_path, instance):
    """TF Serving answers such a batch in-band (the empty one valid false) with 200, so KServe logs both halves:
    what the model answered for the other images is kept."""
    sink = _sink(tmp_path, batch_size=1)
    images = [b"first image", b"", b"third image"]
    body = json.dumps({"instances": [{"b64": base64.b64encode(images[0]).decode()}, instance,
                                     {"b64": base64.b64encode(images[2]).decode()}]}).encode()
    assert sink.receive(kserve_headers("request", "empty"), body)["images"] == 3
    answer = sink.receive(kserve_headers("response", "empty"), response_body([0.25, None, 0.75]))
    assert answer == {"id": "empty", "recorded": 2, "skipped": {traffic_sink.EMPTY_IMAGE: 1}}
    assert sink.refused == {} and sink.stats()["lost"] == {traffic_sink.EMPTY_IMAGE: 1}
    window = traffic.read_window(str(tmp_path / "traffic"))
    assert sorted(zip(window.request_ids, window.scores.tolist())) == [("empty", 0.25), ("empty", 0.75)]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
                                  "1999-12-31T23:59:59.999Z"])
def test_a_time_before_the_earliest_a_record_may_carry_is_refused_with_its_reason(tmp_path, when):
    sink = _sink(tmp_path)
    headers, body = structured("request", "old", request_body([b"a"]))
    event = json.loads(body)
    event["time"] = when
    for attempt in (kserve_headers("request", "old", when=when), request_body([b"a"])), (headers, json.dumps(event)):
        with pytest.raises(traffic_sink.Refused, match=r"is before 2000-01-01T00:00:00\+00:00") as refused:
            sink.receive(*attempt)
        assert refused.value.reason == traffic_sink.TIME_OUT_OF_RANGE and refused.value.status == 400
    assert sink.refused == {traffic_sink.TIME_OUT_OF_RANGE: 2} and sink.stats()["waiting"]["requests"] == 0


def test_an_id_holding_a_lone_surrogate_is_refused_and_valid_text_of_any_plane_taken(tmp_path):
    sink = _sink(tmp_path, batch_size=1)
    headers, _ = structured("request", "x", request_body([b"a"]))
    lone = '{"specversion": "1.0", "id": "x\\udc80", "type": "org.kubeflow.serving.inference.request", ' \
           '"source": "s", "data": {"instances": [{"b64": "YQ=="}]}}'
    with pytest.raises(traffic_sink.Refused, match=r"\\udc80 at index 1, a lone surrogate") as refused:
        sink.receive(headers, lone.encode())
    assert refused.value.reason == traffic_sink.NOT_TEXT and sink.stats()["waiting"]["requests"] == 0
    paired = "x\U0001f431\u00e9"
    sink.receive(*structured("request", paired, request_body([b"a"])))
    assert sink.receive(*structured("response", paired, response_body([0.5])))["recorded"] == 1
    assert traffic.read_window(str(tmp_path / "traffic")).request_ids == [paired]


def test_an_event_of_more_images_or_answers_than_the_limit_is_refused_whole(tmp_path):
    sink = _sink(tmp_path, max_instances=3)
    with pytest.raises(traffic_sink.Refused, match="4 images, above the limit of 3") as refused:
        sink.receive(kserve_headers("request", "many"), request_body([b"a"] * 4))
    assert refused.value.status == 413
    with pytest.raises(traffic_sink.Refused, match="4 answers"):
        sink.receive(kserve_headers("response", "many"), response_body([0.5] * 4))
    assert sink.refused == {traffic_sink.TOO_MANY_INSTANCES: 2}
    assert sink.receive(kserve_headers("request", "few"), request_body([b"a"] * 3))["images"] == 3


@pytest.fixture
def served_sink(tmp_path):
    """A sink on a real uvicorn server (the configuration `traffic-sink` serves with) in a thread of this
    process, and a client of it."""
    import threading

    import uvicorn

    holder = {}

    def start(**settings):
        sink = _sink(tmp_path, **settings)
        port = _free_port()
        server = uvicorn.Server(traffic_sink.server_config(sink, port))
        thread = threading.Thread(target=server.run)
        thread.start()
        holder.update(server=server, thread=thread)
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        return sink, port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    yield start
    if holder:
        holder["server"].should_exit = True
        holder["thread"].join(30)


def test_healthz_answers_while_a_large_event_is_parsed(served_sink):
    import concurrent.futures

    sink, _, client = served_sink(max_instances=10**6, max_event_mb=16)
    body = request_body([b"ab"] * 150_000)  # some 3 MB: seconds of JSON and base64 for one event
    with concurrent.futures.ThreadPoolExecutor(1) as pool, httpx.Client(base_url=client.base_url,
                                                                         timeout=60) as probe:
        big = pool.submit(client.post, "/", headers=kserve_headers("request", "big"), content=body)
        while sink.received == 0:  # the body is whole and its parsing begun
            time.sleep(0.01)
        answered = []
        while not big.done():
            started = time.monotonic()
            assert probe.get("/healthz").json() == {"ok": True}
            answered.append((time.monotonic() - started, big.done()))
        assert big.result().json() == {"id": "big", "images": 150_000, "waiting_for": "response"}
    in_flight = [seconds for seconds, done in answered if not done]
    assert in_flight, "no probe was answered while the event was parsed"
    assert max(in_flight) < 1.0, answered


def test_an_unforeseen_fault_is_answered_500_in_one_line_counted_and_the_sink_goes_on(served_sink, caplog,
                                                                                        monkeypatch):
    sink, _, client = served_sink()
    taking = sink.take

    def faulty(parsed):
        if parsed.event.id == "boom":
            raise KeyError("a fault no test foresaw")
        return taking(parsed)

    monkeypatch.setattr(sink, "take", faulty)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            answer = client.post("/", headers=kserve_headers("request", "boom"), content=request_body([b"a"]))
            assert answer.status_code == 500
            assert answer.json() == {"refused": traffic_sink.INTERNAL, "detail": "KeyError: 'a fault no test foresaw'"}
        assert client.post("/", headers=kserve_headers("request", "fine"), content=request_body([b"a"])).json() == \
            {"id": "fine", "images": 1, "waiting_for": "response"}
    assert sink.stats()["refused"] == {traffic_sink.INTERNAL: 3}
    said = [r.getMessage() for r in caplog.records if traffic_sink.INTERNAL in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], said  # rate-limited: once per reason every 10 s
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text


def _padded_request(port: int, padding: int) -> bytes:
    """The answer to a request event whose headers hold `padding` bytes more, sent in two parts: h11 holds its
    limit against headers still incomplete. b"reset" when the sink closed the connection while they were sent."""
    head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", f"padded-{padding}").items()).encode()
    body = request_body([b"a"])
    message = (b"POST / HTTP/1.1\r\nhost: x\r\n" + head + b"x-padding: " + b"p" * padding
               + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        try:
            connection.sendall(message[:padding])
            time.sleep(0.3)
            connection.sendall(message[padding:])
            return connection.recv(200)
        except ConnectionError:
            return b"reset"


def test_a_request_whose_headers_are_above_the_limit_is_answered_400_counted_and_the_sink_serves_on(served_sink):
    sink, port, client = served_sink()
    assert _padded_request(port, 20_000).startswith(b"HTTP/1.1 200"), "above h11's own 16 KiB, below the sink's"
    answer = _padded_request(port, traffic_sink.MAX_HEADER_BYTES + 1000)
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"reset", answer
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/stats").json()["refused"] == {traffic_sink.UNREADABLE_HTTP: 1}
    assert client.post("/", headers=kserve_headers("request", "after"),
                       content=request_body([b"a"])).json()["waiting_for"] == "response"


def test_headers_sent_slowly_are_cut_off_after_the_timeout_and_the_sink_serves_on(served_sink):
    sink, port, client = served_sink(header_seconds=0.5)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        started = time.monotonic()
        answer = b""
        try:
            for byte in b"POST / HTTP/1.1\r\nhost: x\r\nx-slow: " + b"s" * 100:  # one byte every 50 ms
                slow.sendall(bytes([byte]))
                time.sleep(0.05)
            answer = slow.recv(200)
        except ConnectionError:
            answer = b"reset"
        assert answer.startswith(b"HTTP/1.1 408") or answer == b"reset", answer
        assert time.monotonic() - started < 3, "cut off after the timeout, not when the headers ended"
        assert silent.recv(200).startswith(b"HTTP/1.1 408"), "a connection that sends nothing is closed too"
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/stats").json()["refused"] == {traffic_sink.SLOW_HEADERS: 2}


def test_connections_beyond_the_limit_are_answered_503_and_closed_as_they_open(served_sink):
    sink, port, client = served_sink(max_connections=3)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert extra.recv(200).startswith(b"HTTP/1.1 503")
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)  # the server sees the closes
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/stats").json()["refused"] == {traffic_sink.TOO_MANY_CONNECTIONS: 1}


def test_the_health_port_answers_while_the_events_port_is_full_and_sigterm_stops_both(root):
    """A liveness probe on the events' port fails during a flood of half-open connections (503 as each opens):
    the manifest's probes use a port of their own."""
    health = _free_port()
    sink = Sink(root, "--max-connections", "3", "--health-port", str(health))
    held = [socket.create_connection(("127.0.0.1", sink.port), timeout=10) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as extra:
            assert extra.recv(200).startswith(b"HTTP/1.1 503")
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=10).json() == {"ok": True}
        assert httpx.get(f"http://127.0.0.1:{health}/stats", timeout=10).status_code == 404, "probes alone there"
    finally:
        for connection in held:
            connection.close()
        code, out, err = sink.stop()
    assert code == 0 and "Traceback" not in err, err
    assert f"/healthz on port {health})" in out and "traffic sink: stopped" in out
    for port in (sink.port, health):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_headers_are_held_to_the_limit_whatever_chunks_they_arrive_in(served_sink):
    """h11 holds its limit against incomplete headers only: 60 KiB sent, then 64 KiB more that end them, passed."""
    sink, port, client = served_sink()
    head = b"POST / HTTP/1.1\r\nhost: x\r\nx-padding: " + b"p" * (traffic_sink.MAX_HEADER_BYTES - 4096)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        try:
            connection.sendall(head)
            time.sleep(0.3)
            connection.sendall(b"q" * 60_000 + b"\r\ncontent-length: 0\r\n\r\n")
            answer = connection.recv(200)
        except ConnectionError:
            answer = b"reset"
    assert answer.startswith(b"HTTP/1.1 400") or answer == b"reset", answer
    assert client.get("/stats").json()["refused"] == {traffic_sink.UNREADABLE_HTTP: 1}


def test_a_client_gone_mid_body_is_counted_once_in_one_line_without_a_traceback(served_sink, caplog, monkeypatch):
    sink, port, client = served_sink()
    # uvicorn's loggers do not propagate (its own configuration), nor may the sink's after an earlier command's
    # set-up: the test's handler on both.
    for name in ("uvicorn.error", traffic_sink.logger.name):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [*logging.getLogger(name).handlers, caplog.handler])
    caplog.set_level(logging.WARNING, logger=traffic_sink.logger.name)
    head = "".join(f"{k}: {v}\r\n" for k, v in kserve_headers("request", "gone").items()).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n" + head + b"content-length: 1000\r\n\r\n{\"instances")
    chunked = kserve_headers("request", "chunked") | {"transfer-encoding": "chunked"}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nhost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in chunked.items())
                           .encode() + b"\r\nzz\r\nabc\r\n0\r\n\r\n")  # a chunk size that is no number
        assert connection.recv(200).startswith(b"HTTP/1.1 400")
    deadline = time.monotonic() + 10
    while sum(client.get("/stats").json()["refused"].values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert client.get("/stats").json()["refused"] == {traffic_sink.CLIENT_GONE: 1, traffic_sink.UNREADABLE_HTTP: 1}
    assert "Traceback" not in caplog.text and "Exception in ASGI application" not in caplog.text
    assert "connection closed before the body was whole" in caplog.text
