"""What the Kubeflow package's tasks do: ingest a span, run one TFX node, report the run.

The KFP components (orchestration/kfp_components.py) are thin: each imports this
module inside the task's container and calls one function here. A foreseeable
fault (unreachable metadata store, unwritable root, no usable images) ends the
task with one line naming it and a non-zero exit code.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import posixpath
import re
import sys
import tempfile

import tensorflow as tf

from contract import layout
from contract.layout import RunLayout
from orchestration import beam_policy, tfx_node


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def ingest(data_dir: str, root: str, settings: dict, metadata_store: str = "") -> str:
    """The image folder becomes a new span under <root>/examples (unchanged data: the latest is reused).

    Also installs the curated schema of the code in this image where ImportSchemaGen
    reads it, and marks earlier outputs whose files are gone DELETED in the store
    (see orchestration.store_health.mark_missing). Returns the ingest table; an empty
    `data_dir` ingests nothing (the run trains on the spans already there).
    """
    from ml_metadata import metadata_store as mlmd

    from ingest import sources, spans
    from orchestration import store_health
    from pipeline.pipeline import SCHEMA_PATH

    where = RunLayout(root)
    examples_root = where.examples_root
    settings = dict(settings)
    window = int(settings.pop("span_window", 1))  # KFP hands numbers over as floats; the rest are ingest settings
    try:
        tfx_node.check_writable(root)
        tf.io.gfile.makedirs(posixpath.dirname(where.schema_path))
        tf.io.gfile.copy(SCHEMA_PATH, where.schema_path, overwrite=True)
        if metadata_store:
            tfx_node.check_store(metadata_store)
            missing = store_health.mark_missing(mlmd.MetadataStore(tfx_node.connection_config(metadata_store)))
            if missing:
                print(f"{len(missing)} earlier outputs are gone from disk; marked DELETED in ML Metadata:\n  "
                      + "\n  ".join(missing), flush=True)
    except tfx_node.NodeTaskError as error:
        _fail(str(error))
    if not data_dir:
        existing = spans.existing_spans(examples_root)
        if not existing:
            _fail(f"no data_dir given and no spans in {examples_root}")
        table = f"no data_dir given: the run uses the spans in {examples_root} (latest: span {existing[-1]})"
    else:
        try:
            report = spans.ingest("folder", data_dir, examples_root, spans.IngestSettings(**settings),
                                  functools.partial(beam_policy.ingest_args, 0))
        except (sources.SourceError, spans.NoUsableImagesError) as error:
            _fail(str(error))
        table = report.table()
    problems = spans.window_problems(examples_root, window)
    if problems:
        _fail(f"{len(problems)} problems in spans written without an ingest report (fix or remove them):\n  "
              + "\n  ".join(problems))
    print(table, flush=True)
    return table


def run_node(node_program: str, run_id: str, metadata_store: str) -> str:
    """Runs one TFX node; returns 'executed', 'cached' or 'skipped'."""
    node_id = json.loads(node_program)["nodes"][0]["pipelineNode"]["nodeInfo"]["id"]
    try:
        outcome = tfx_node.run_node(node_program, run_id, metadata_store)
    except tfx_node.NodeTaskError as error:
        _fail(f"{node_id}: {error}")
    print(f"{node_id}: {outcome}", flush=True)
    return outcome


def report(metadata_store: str, run_id: str, pipeline_name: str, root: str, settings: dict,
           markdown_path: str, html_path: str):
    """Summarizes the run from MLMD; writes the summary and HTML report under <root>/runs/<run id>/.

    Returns (metrics {name: value}, confusion matrix or None, the run's folder) for the KFP run page; the
    Markdown decision and the one-file HTML report go to the given artifact paths.
    """
    from ml_metadata import metadata_store as mlmd

    from ingest import spans
    from reporting import run_report, run_summary

    try:
        tfx_node.check_store(metadata_store)
        run_id = tfx_node.resolve_run_id(run_id)
    except tfx_node.NodeTaskError as error:
        _fail(str(error))
    store = mlmd.MetadataStore(tfx_node.connection_config(metadata_store))
    summary = run_summary.summarize_run(store, pipeline_name, run_id=run_id)
    examples_root = RunLayout(root).examples_root
    existing = spans.existing_spans(examples_root)
    latest = spans.load_report(examples_root, existing[-1]) if existing else None
    ingest_report = latest.to_json() if latest else None
    if ingest_report:
        summary.ingest = {k: ingest_report[k] for k in ("span", "reused", "files_seen", "counts")}
    text = summary.text()
    print(text, flush=True)

    run_folder = posixpath.join(RunLayout(root).runs_dir, _safe(run_id))
    tf.io.gfile.makedirs(run_folder)
    with tf.io.gfile.GFile(posixpath.join(run_folder, layout.SUMMARY_FILE), "w") as f:
        json.dump(summary.to_json(), f, indent=2)
    with tempfile.TemporaryDirectory() as local:
        page = run_report.write_report(summary, local, settings["training"], ingest_report)
        tf.io.gfile.makedirs(posixpath.join(run_folder, layout.REPORT_DIR))
        for name in os.listdir(page.parent):
            tf.io.gfile.copy(os.path.join(page.parent, name), posixpath.join(run_folder, layout.REPORT_DIR, name),
                             overwrite=True)
        with open(html_path, "w") as f:
            f.write(inline_images(page.read_text(), page.parent))
    with open(markdown_path, "w") as f:
        f.write(decision_markdown(summary, posixpath.join(run_folder, layout.REPORT_DIR, layout.REPORT_PAGE)))
    metrics = dict(summary.metrics.get("candidate", {}))
    metrics |= {f"baseline_{name}": value for name, value in summary.metrics.get("baseline", {}).items()}
    if summary.pushed_version is not None:
        metrics["pushed_version"] = summary.pushed_version
    return metrics, summary.confusion_matrix, run_folder


def decision_markdown(summary, report_uri: str) -> str:
    """The run page's Markdown: the blessing decision, what was pushed, each node's outcome."""
    lines = [f"## {summary.pipeline}, run {summary.run_id}", ""]
    if summary.blessed is None:
        lines.append("**No evaluation in this run.**")
    else:
        lines.append(f"**Blessed: {'yes' if summary.blessed else 'no'}** ({summary.decision})")
    lines.append("")
    lines.append("```")
    lines.append(summary.text())
    lines.append("```")
    lines.append(f"Full report: `{report_uri}`")
    return "\n".join(lines) + "\n"


def inline_images(html: str, folder) -> str:
    """The report with its PNG figures embedded, so it is one file (KFP shows one HTML artifact file)."""
    def embed(match):
        path = os.path.join(folder, match.group(1))
        if not os.path.exists(path):
            return match.group(0)
        with open(path, "rb") as f:
            return f'src="data:image/png;base64,{base64.b64encode(f.read()).decode()}"'
    return re.sub(r'src="([^":/]+\.png)"', embed, html)


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
