"""`traffic-sink` as a command: a real HTTP server on loopback in a subprocess, fed events in KServe's inference
logger format (tests/traffic/kserve.py), stopped by signals.
"""

import datetime
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

from contract import layout
from tests.helpers import ROOT
from tests.traffic.kserve import free_port, kserve_headers, request_body, response_body, structured
from traffic import lock, reasons, tfrecord
from traffic import server as sink_server
from traffic import spans as traffic_spans
from traffic import window as traffic_window
from traffic.settings import SinkSettings


class Sink:
    """`traffic-sink` in a subprocess on a free loopback port."""

    def __init__(self, root: pathlib.Path, *flags: str):
        self.port = free_port()
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
                 reasons.NOT_A_CLOUDEVENT),
    "bad ce-time": ({**kserve_headers("request", "x"), "ce-time": "yesterday"}, request_body([b"i"]),
                    reasons.NOT_A_CLOUDEVENT),
    "not a CloudEvent": ({"content-type": "application/json"}, b'{"instances": []}', reasons.NOT_A_CLOUDEVENT),
    "wrong type": ({**kserve_headers("request", "x"), "ce-type": "com.example.other"}, request_body([b"i"]),
                   reasons.WRONG_TYPE),
    "bad JSON": (kserve_headers("request", "x"), b'{"instances": [', reasons.BAD_JSON),
    "bad base64": (kserve_headers("request", "x"), b'{"instances": [{"b64": "@@@"}]}', reasons.BAD_BASE64),
    "not an image": (kserve_headers("request", "x"), b'{"instances": [[1, 2, 3]]}', reasons.NOT_A_PREDICTION),
    "other signature": (kserve_headers("request", "x"), b'{"signature_name": "serving_examples", "instances": '
                                                        b'[{"b64": "AA=="}]}', reasons.OTHER_SIGNATURE),
    "no predictions": (kserve_headers("response", "y"), b'{"error": "x"}', reasons.NOT_A_PREDICTION),
    "too large": (kserve_headers("request", "x"), b"{" + b" " * (2 << 20) + b"}", reasons.TOO_LARGE),
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
        assert mismatch.status_code == 400 and mismatch.json()["refused"] == reasons.MISMATCH
        stats = sink.stats()
        assert (stats["images_received"], stats["open_batch"], stats["recorded"]) == (6, 5, 0)
        assert traffic_spans.committed_spans(str(root / "traffic")) == [], "the batch is open: nothing published yet"
    finally:
        code, out, err = sink.stop(signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert "traffic sink: stopped; 5 images recorded in 1 span(s)" in out
    window = traffic_window.read_window(str(root / "traffic"))
    assert window.request_ids == ["a", "a", "b", "b", "c"]
    assert window.images == cats[:2] + dogs[:3], "the images as the client sent them"
    assert window.scores[:3].tolist() == pytest.approx([0.1, 0.2, 0.9]) and math.isnan(window.scores[3])
    assert window.versions.tolist() == [7] * 5, "the version the root's serving config names"
    assert window.times_ms[0] == int(datetime.datetime(2026, 11, 24, 10, 0, 0, 123000, datetime.timezone.utc)
                                     .timestamp() * 1000) and window.origins == ["kserve"] * 5

    expected = {}
    for _, _, reason in MALFORMED.values():
        expected[reason] = expected.get(reason, 0) + 1
    expected[reasons.MISMATCH] = 1
    assert stats["refused"] == expected and stats["lost"] == {reasons.MISMATCH: 1}
    assert "refused an event: bad base64" in err and "lost 1 image(s): response does not match" in err
    report = traffic_spans.load_report(str(root / "traffic"), 1)
    assert report.refused == expected and report.lost == {reasons.MISMATCH: 1} and report.origins == ["kserve"]


def test_a_sink_killed_mid_batch_leaves_no_span_and_the_next_start_removes_its_staging(root):
    traffic_root = root / "traffic"
    sink = Sink(root, "--batch-size", "1000")  # 256 images a file: the batch's first file is staged at 256
    for i in range(30):
        images = [f"image {i}-{k}".encode() for k in range(10)]
        sink.post(kserve_headers("request", f"r{i}"), request_body(images))
        sink.post(kserve_headers("response", f"r{i}"), response_body([0.5] * 10))
    assert sink.stats()["open_batch"] == 300
    with pytest.raises(lock.SinkBusyError, match="another traffic sink records into"):
        sink_server.start(str(root), SinkSettings())  # would remove the running sink's batch as a killed one's
    code, _, _ = sink.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    (staged,) = [p for p in traffic_root.iterdir() if p.name != lock.SINK_LOCK]
    assert staged.name.startswith(".traffic-") and [p.name for p in staged.iterdir()] == ["traffic-0.tfrecord"]
    assert traffic_spans.committed_spans(str(traffic_root)) == []
    assert len(traffic_window.read_window(str(traffic_root))) == 0

    (traffic_root / "span-1").mkdir()  # what a writer killed between its rename and its report leaves
    (traffic_root / "span-1" / "traffic-0.tfrecord").write_bytes(tfrecord.tfrecord_bytes([b"lost"]))
    old = time.time() - traffic_spans.PUBLISH_GRACE_SECONDS - 60  # no writer is still publishing it
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
    assert f"moved to {traffic_spans.aside_dir(str(traffic_root))}/span-1-" in err
    assert traffic_window.read_window(str(traffic_root)).request_ids == ["after"]
    assert traffic_spans.committed_spans(str(traffic_root)) == [2], \
        "the number of the span moved aside is not used again"


def test_a_folder_that_is_not_a_pipeline_root_is_refused_in_one_line(tmp_path):
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    empty = tmp_path / "empty"
    for folder, said in ((mine, "is not empty and is not a root of this pipeline"),
                         (empty, "is not a root of this pipeline yet")):
        result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root",
                                 str(folder), "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True,
                                timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and said in result.stderr and "Traceback" not in result.stderr
        assert "new or empty folder" not in result.stderr, "a run's advice: the sink needs a root that has run"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and not empty.exists()


def test_a_traffic_folder_that_is_a_link_is_refused_and_the_folder_it_points_at_untouched(root, tmp_path):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / ".traffic-mine").mkdir()  # named as the sink's staging folders are, which its start removes
    (root / "traffic").symlink_to(mine)
    result = subprocess.run([sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root", str(root),
                             "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "traffic is a symbolic link" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert [p.name for p in mine.iterdir()] == [".traffic-mine"]


def test_the_health_port_answers_while_the_events_port_is_full_and_sigterm_stops_both(root):
    """A liveness probe on the events' port fails during a flood of half-open connections (503 once its headers
    are whole): the manifest's probes use a port of their own."""
    health = free_port()
    sink = Sink(root, "--max-connections", "3", "--health-port", str(health))
    held = [socket.create_connection(("127.0.0.1", sink.port), timeout=10) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
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


def test_a_health_port_in_use_is_named_in_one_line_with_no_traceback(root):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        health = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root", str(root), "--port",
             str(free_port()), "--health-port", str(health)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "the traffic sink could not listen on 127.0.0.1 port" in result.stderr, result.stderr
    said = result.stderr.strip().splitlines()[-1]  # the last line says why, whatever the sink logged before it
    assert said.startswith("error: the traffic sink could not listen") and "address already in use" in said, said
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr, result.stderr
