#!/usr/bin/env python3
"""The traffic sink's throughput on one core and its memory, beside the predictor's own rate.

The sink (`traffic-sink`, a real uvicorn server on loopback) runs pinned to
one core; a client on the other cores sends what KServe's logger sends for
each request of one image: a request event and its response event (binary
CloudEvents, 4 connections at once, as the agent's workers do). Figures:

- images recorded per second, from the first event to the last published
  span, against the served SavedModel's serving_default on the same images
  (batch 32, in this process, all cores): the sink keeps up when the ratio is
  at least 1, and the issue's target is 200 images a second;
- the sink's start time (it imports TensorFlow to write tf.Examples);
- the images a second its CPU time would take on one core (the client, on
  the other core, may be what limits the first figure);
- its peak resident memory at two batch sizes and two traffic volumes (the
  second 5 times the first, in the same process): bounded by the batch (at
  most 256 images are held: the rest are staged in files), not the traffic.

    .venv/bin/python -m benchmarks.traffic_sink --model runs/demo/serving_model/1
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.figures import Figure, table
from contract import layout

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "7 traffic sink"
CONNECTIONS = 4
DISTINCT_IMAGES = 32
PHOTO_SIDES = (320, 500)


def _images() -> list[bytes]:
    from ingest import synthetic

    # Photo-sized JPEGs (tens of kilobytes), as clients send them: what a batch holds is what memory holds.
    return [synthetic.render_image(("cat", "dog")[i % 2], i, sides=PHOTO_SIDES) for i in range(DISTINCT_IMAGES)]


def _headers(kind: str, event_id: str) -> dict:
    """What KServe's logger worker sends (pkg/logger/worker.go, binary mode)."""
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": f"org.kubeflow.serving.inference.{kind}",
            "ce-source": "http://cats-vs-dogs-predictor.default/", "ce-time": "2026-11-24T10:00:00.5Z",
            "ce-inferenceservicename": "cats-vs-dogs", "ce-namespace": "default", "ce-component": "predictor",
            "ce-endpoint": "", "ce-metadata": "{}", "content-type": "application/json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Peak(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:  # noqa: BLE001 - the process ended
                return
            time.sleep(0.05)


def _send(port: int, bodies: list[bytes], answer: bytes, start: int, count: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for n in range(start, start + count):
        for kind, body in (("request", bodies[n % len(bodies)]), ("response", answer)):
            connection.request("POST", "/", body=body, headers=_headers(kind, f"bench-{n}"))
            reply = connection.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"the sink answered {reply.status} to {kind} bench-{n}")
    connection.close()


def _traffic(port: int, bodies: list[bytes], answer: bytes, start: int, count: int) -> None:
    share = count // CONNECTIONS
    with concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool:
        done = [pool.submit(_send, port, bodies, answer, start + k * share,
                            share if k < CONNECTIONS - 1 else count - share * (CONNECTIONS - 1))
                for k in range(CONNECTIONS)]
        for future in done:
            future.result()


def _stats(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/stats")
    stats = json.loads(connection.getresponse().read())
    connection.close()
    return stats


def run_sink(scratch: pathlib.Path, batch_size: int, volumes: tuple[int, int], images: list[bytes]) -> dict:
    """One sink on one core fed volumes[0] images, then volumes[1] - volumes[0] more; its figures."""
    import psutil

    root = scratch / f"root-{batch_size}"
    (root / "serving_model").mkdir(parents=True)
    (root / layout.ROOT_MARKER).write_text("{}")
    port = _free_port()
    cores = sorted(os.sched_getaffinity(0))
    sink_core, client_cores = {cores[0]}, set(cores[1:]) or {cores[0]}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "pipeline_runner.py"), "traffic-sink", "--root", str(root), "--port", str(port),
         "--batch-size", str(batch_size), "--batch-seconds", "600"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, sink_core))
    while True:
        try:
            _stats(port)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the sink did not start: {process.stderr.read()[-2000:]}") from None
            time.sleep(0.05)
    start_seconds = time.perf_counter() - started
    sink = psutil.Process(process.pid)
    idle = sink.memory_info().rss
    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode() for image in images]
    answer = json.dumps({"predictions": [{"dog_probability": 0.75, "class_name": "dog", "valid": True,
                                          "error": ""}]}).encode()
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, client_cores)
    peak = _Peak(process.pid)
    peak.start()
    try:
        cpu_before = sum(sink.cpu_times()[:2])
        began = time.perf_counter()
        _traffic(port, bodies, answer, 0, volumes[0])
        peak_small = peak.peak
        _traffic(port, bodies, answer, volumes[0], volumes[1] - volumes[0])
        stats = _stats(port)
        cpu = sum(sink.cpu_times()[:2]) - cpu_before
        process.send_signal(signal.SIGTERM)  # publishes the open batch
        process.wait(timeout=120)
        seconds = time.perf_counter() - began
    finally:
        os.sched_setaffinity(0, own)
        peak.stop.set()
        if process.poll() is None:
            process.kill()
    from traffic import spans

    recorded = sum(spans.load_report(str(root / "traffic"), span).records
                   for span in spans.committed_spans(str(root / "traffic")))
    if recorded != volumes[1] or stats["refused"] or stats["lost"]:
        raise RuntimeError(f"the sink recorded {recorded} of {volumes[1]} images: {stats}")
    return {"rate": volumes[1] / seconds, "start": start_seconds, "cpu_ms": cpu / volumes[1] * 1000,
            "idle": idle / 2**20, "peak_small": peak_small / 2**20, "peak_large": peak.peak / 2**20}


def predictor_rate(version_dir: pathlib.Path, images: list[bytes], repeats: int = 5) -> float:
    """Images a second of the served SavedModel's serving_default on the same images, batch 32."""
    import tensorflow as tf

    from contract import features

    serve = tf.saved_model.load(str(version_dir)).signatures[features.SERVING_SIGNATURE]
    batch = tf.constant(images[:32])
    serve(**{features.IMAGE_INPUT: batch})  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        serve(**{features.IMAGE_INPUT: batch})
    return repeats * len(images[:32]) / (time.perf_counter() - started)


def bench_sink(version_dir: pathlib.Path | None, quick: bool, scratch: pathlib.Path) -> list[Figure]:
    images = _images()
    volumes = (100, 500) if quick else (2000, 10000)
    reference = predictor_rate(version_dir, images) if version_dir else None
    figures = []
    for batch_size in (100, 1000):
        measured = run_sink(scratch, batch_size, volumes, images)
        rate = measured["rate"]
        figures.append(Figure(SECTION, f"images/s on one core, batch {batch_size} (vs predictor, batch 32)", rate,
                              "img/s", reference, rate / reference if reference else None, ">= 200 img/s",
                              rate >= 200))
        capacity = 1000 / measured["cpu_ms"]  # what one core would take if the client sent faster
        figures.append(Figure(SECTION, f"images per CPU second, batch {batch_size} (vs predictor)", capacity,
                              "img/s", reference, capacity / reference if reference else None))
        figures.append(Figure(SECTION, f"start to first answer, batch {batch_size}", measured["start"], "s"))
        figures.append(Figure(SECTION, f"RSS idle after start, batch {batch_size}", measured["idle"], "MiB"))
        figures.append(Figure(SECTION, f"peak RSS, batch {batch_size}, {volumes[0]} images",
                              measured["peak_small"], "MiB"))
        growth = measured["peak_large"] / measured["peak_small"]
        figures.append(Figure(SECTION, f"peak RSS, batch {batch_size}, {volumes[1]} images", measured["peak_large"],
                              "MiB", measured["peak_small"], growth,
                              f"<= 1.05x at {volumes[1] // volumes[0]}x the traffic", growth <= 1.05))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=pathlib.Path,
                        help="A pushed version's folder: the predictor whose rate is the reference.")
    parser.add_argument("--quick", action="store_true", help="100 and 500 images instead of 2,000 and 10,000.")
    args = parser.parse_args(argv)
    from cli import quiet_logs

    quiet_logs.apply()
    with tempfile.TemporaryDirectory() as scratch:
        print(table(bench_sink(args.model, args.quick, pathlib.Path(scratch))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
