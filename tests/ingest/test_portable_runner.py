"""Ingest on a Beam runner whose workers are other processes: the same span as on the DirectRunner.

Beam's portable runner with an external worker pool (apache_beam's
worker_pool_main) runs every SDK worker as a process of its own, as Dataflow
runs them on other machines: the span's shards must be written where those
workers can write (under the examples root), not into this process's folders.
"""

import os
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from ingest import span_report, spans, synthetic


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def worker_pool():
    port = _free_port()
    # The pool starts workers with `python`: this environment's must come first on PATH.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    yield port
    pool.terminate()
    pool.wait(timeout=30)


def _records(examples_root, span):
    records = {}
    for split in spans.SPLITS:
        files = tf.io.gfile.glob(os.path.join(examples_root, f"span-{span}", split, "*"))
        records[split] = sorted(record.numpy() for record in tf.data.TFRecordDataset(files))
    return records


@pytest.mark.e2e
def test_ingest_on_a_portable_runner_with_worker_processes_writes_the_direct_runners_span(worker_pool, tmp_path):
    data = tmp_path / "images"
    synthetic.write_demo_images(data, 6)
    (data / "cat" / "broken.jpg").write_bytes(b"not an image")
    direct = spans.ingest("folder", data, tmp_path / "direct")
    portable_args = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                     f"--environment_config=localhost:{worker_pool}"]
    portable = spans.ingest("folder", data, tmp_path / "portable", beam_args=lambda items: portable_args)
    assert (portable.counts, portable.quarantined, portable.examples_per_split) == \
        (direct.counts, direct.quarantined, direct.examples_per_split)
    assert portable.counts["quarantined"] == 1
    assert _records(tmp_path / "portable", 1) == _records(tmp_path / "direct", 1)
    assert sorted(os.listdir(tmp_path / "portable")) == ["span-1", span_report.NUMBERS_FILE], "no staging left"
