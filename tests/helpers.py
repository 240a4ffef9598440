"""Helpers of the tests that drive the CLI and read MLMD directly."""

import hashlib
import json
import pathlib
import subprocess
import sys

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIPELINE_NAME = "cats-vs-dogs"
# Settings that make a whole pipeline run cheap: the e2e tests check orchestration, not accuracy.
TINY = ["--image-size", "64", "--alpha", "0.35", "--weights", "none", "--head-epochs", "1",
        "--fine-tune-epochs", "1", "--batch-size", "8", "--calibration-images", "16"]


def run_cli(data_dir, output_dir, *settings):
    """Runs `pipeline_runner.py run` (on the existing spans when data_dir is None);
    returns the process result and the summary JSON."""
    source = ["--data-dir", str(data_dir)] if data_dir is not None else []
    command = [sys.executable, str(ROOT / "pipeline_runner.py"), "run", *source, "--output-dir", str(output_dir),
               *settings]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    summary_path = output_dir / "run_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return result, summary


def latest_run_states(metadata_path):
    """{node_id: [state names]} of the newest pipeline_run context, plus the store."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    store = metadata_store.MetadataStore(config)
    run = max(store.get_contexts_by_type("pipeline_run"), key=lambda c: (c.create_time_since_epoch, c.id))
    states = {}
    for execution in store.get_executions_by_context(run.id):
        node = next(c.name.split(".", 1)[1] for c in store.get_contexts_by_execution(execution.id)
                    if c.name.startswith(PIPELINE_NAME + "."))
        states.setdefault(node, []).append(metadata_store_pb2.Execution.State.Name(execution.last_known_state))
    return states, store, run


def tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in pathlib.Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()
