"""What the Kubeflow package's tasks do: take the root and ingest, run one TFX node, report the run.

The KFP components (orchestration/engines/kfp_components.py) are thin: each imports this
module inside the task's container and calls one function here. The steps
around the DAG are orchestration.run.lifecycle's, as in a local run; the root's
lease (orchestration.root.lease) keeps a second run off the root. A foreseeable
fault (a root held by another run, an unreachable metadata store, an
unwritable root, no usable images) ends the task with one line naming it and
a non-zero exit code (contract.errors.fail_task), and is kept under
<root>/runs/<run id>/tasks/ for the exit handler's summary. What a task says
goes to `say`, which the component (orchestration/engines/kfp_components.py) points
at the task's log.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import posixpath
import re
from typing import NoReturn

import tensorflow as tf

from config import DataConfig, PipelineConfig
from contract import layout, progress, storage
from contract.errors import CommandError, fail_task, first_line
from contract.layout import RunLayout
from orchestration.engines import tfx_node
from orchestration.root import lease, marker, store_health
from orchestration.run import lifecycle
from orchestration.run.lifecycle import Say
from orchestration.serving import kserve


def _write_record(root: str, run_id: str, task: str, record: dict) -> None:
    """What one task of the run did, kept for the exit handler (which cannot read a failed task's outputs)."""
    folder = posixpath.join(RunLayout(root).run_dir(run_id), layout.TASKS_DIR)
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(posixpath.join(folder, f"{task}.json"), "w") as f:
        json.dump({"task": task, **record}, f, indent=2)


def _read_records(root: str, run_id: str) -> dict[str, dict]:
    folder = posixpath.join(RunLayout(root).run_dir(run_id), layout.TASKS_DIR)
    records = {}
    for path in sorted(tf.io.gfile.glob(posixpath.join(folder, "*.json"))):
        try:
            record = storage.read_json(path)
        except storage.UnreadableFileError as error:  # the task's outcome is unknown: the run reports it as failed
            record = {"error": f"its task record is unreadable: {error}"}
        records[str(record.get("task") or posixpath.basename(path)[:-len(".json")])] = record
    return records


def _error_text(error: BaseException, max_lines: int = 40) -> str:
    """An executor's error for the run's summary: its type and message, every line of it (the data gate lists
    each problem on a line of its own), as a local run's summary keeps it."""
    lines = f"{type(error).__name__}: {str(error).strip()}".splitlines()
    return "\n".join(lines[:max_lines] + ([f"... {len(lines) - max_lines} more lines"] if len(lines) > max_lines
                                           else []))


def _data_config(settings: dict) -> DataConfig:
    """The data settings as KFP hands them over (numbers as floats), typed as DataConfig's defaults are."""
    defaults = DataConfig()
    return DataConfig(**{name: type(getattr(defaults, name))(value) for name, value in settings.items()})


def ingest(source_kind: str, source: str, root: str, data: dict, metadata_store: str, run_id: str,
           lease_seconds: float, say: Say = progress.say) -> str:
    """The run's first task: takes the root's lease, then the steps before the DAG (lifecycle.start_run).

    Also installs the curated schema of the code in this image where
    ImportSchemaGen reads it. An empty `source` ingests nothing (the run trains
    on the spans already there). Returns the ingest table.
    """
    from ml_metadata import metadata_store as mlmd

    from pipeline import SCHEMA_PATH

    where = RunLayout(root)
    try:
        run_id = tfx_node.resolve_run_id(run_id)
        found = marker.inspect(root)  # before anything is written: no lease or record in a folder of the user's
        tfx_node.check_writable(root)
        held = lease.acquire(root, run_id, stale_after=lease_seconds)
    except CommandError as error:
        if isinstance(error, lease.RootBusyError):  # the report says the run was refused, not that it failed
            _write_record(root, run_id, layout.INGEST_TASK, {"refused": str(error)})
        fail_task(str(error))
    try:
        with lease.heartbeat(root, run_id):
            adopted = marker.claim(root, found)
            if adopted:
                say(adopted)
            tf.io.gfile.makedirs(posixpath.dirname(where.schema_path))
            tf.io.gfile.copy(SCHEMA_PATH, where.schema_path, overwrite=True)
            tfx_node.check_store(metadata_store)
            store = mlmd.MetadataStore(tfx_node.connection_config(metadata_store))
            # Each run writes its summary and report in a folder of its own (runs/<run id>/): no earlier run's
            # output is where this one's goes, so there is nothing to clear.
            before = lifecycle.start_run(
                store, where.examples_root, source_kind if source else None, source, _data_config(data), say=say,
                current_run=run_id, took_over=held.took_over, serving_dir=where.serving_dir,
                pipeline_name=PipelineConfig().name, root=root)
    except CommandError as error:
        _write_record(root, run_id, layout.INGEST_TASK, {"error": str(error)})
        fail_task(str(error))
    _write_record(root, run_id, layout.INGEST_TASK, {"before_the_dag": before.to_json()})
    return before.table


def run_node(node_program: str, run_id: str, metadata_store: str, root: str, say: Say = progress.say,
             resolver_programs: list[str] | tuple[str, ...] = ()) -> str:
    """Runs one TFX node under the run's lease, after the resolvers only it reads (`resolver_programs`, each run
    the same way: tfx_node.task_programs); returns the node's 'executed', 'cached' or 'skipped'.

    A retried task (KFP retries a pod that was killed) launches the node again
    in the same run: TFX's launcher reuses the execution the killed pod left
    RUNNING, and the node completes once; a resolver that completed in the
    killed attempt is not run again. A node whose executor raised in an
    earlier attempt is not run again: the error is a fact about the code or
    the data, not the pod.
    """
    for resolver in resolver_programs:
        _run_one(resolver, run_id, metadata_store, root, say, once=True)
    return _run_one(node_program, run_id, metadata_store, root, say)


def _run_one(node_program: str, run_id: str, metadata_store: str, root: str, say: Say, once: bool = False) -> str:
    node_id = json.loads(node_program)["nodes"][0]["pipelineNode"]["nodeInfo"]["id"]
    # Not the node's own error (the task's, the lease's, the store's): unrecorded, left for KFP's retry. Told apart
    # from the node's by when it happens, not by its class: an executor raises CommandErrors of its own.
    try:
        run_id = tfx_node.resolve_run_id(run_id)
        lease.refresh(root, run_id)
        earlier = _read_records(root, run_id).get(node_id, {}).get("error")
        if earlier:
            raise tfx_node.NodeTaskError(f"failed in an earlier attempt of this run: {earlier}")
        with lease.heartbeat(root, run_id):
            try:
                launch = tfx_node.prepare(node_program, run_id, metadata_store, say, once=once)
            except CommandError:
                raise
            except Exception as error:
                _node_failed(root, run_id, node_id, error)
            try:
                outcome = launch()
            except Exception as error:  # the executor's own error, a CommandError or not
                _node_failed(root, run_id, node_id, error)
    except CommandError as error:
        fail_task(f"{node_id}: {error}")
    say(f"{node_id}: {outcome}")
    return outcome


def _node_failed(root: str, run_id: str, node_id: str, error: Exception) -> NoReturn:
    """Ends the task for the node's own error: recorded for the report, never run again in this run."""
    logging.error("%s failed", node_id, exc_info=True)  # its traceback, in the task's log
    _write_record(root, run_id, node_id, {"error": _error_text(error)})
    fail_task(f"{node_id} failed: {first_line(error, with_type=True)}")


def rollout(root: str, serving: dict, run_id: str, say: Say = progress.say) -> str:
    """After the Pusher, on a root KServe copies once (gs://): makes the InferenceService serve the highest
    complete version (orchestration.serving.kserve.roll_out).

    Every run does it, blessed or not, so a rollout that failed before (an
    unreachable API) is made by the next run; asking for the version already
    asked for changes nothing. A failure is one line naming the API and what it
    said, kept for the exit handler; the pushed version stays as it is, and
    KFP's retries try again.
    """
    from components.serving_pusher import existing_versions

    try:
        run_id = tfx_node.resolve_run_id(run_id)
        lease.refresh(root, run_id)
    except CommandError as error:
        fail_task(f"{layout.ROLLOUT_TASK}: {error}")
    versions = existing_versions(RunLayout(root).serving_dir)
    if not versions:
        line = "nothing pushed yet: the InferenceService is left as it is"
    else:
        try:
            line = kserve.roll_out(kserve.Serving(**serving), versions[-1]).describe()
        except kserve.RolloutError as error:
            message = f"version {versions[-1]} is pushed, but clients do not see it: {error}"
            _write_record(root, run_id, layout.ROLLOUT_TASK, {"error": message})
            fail_task(f"{layout.ROLLOUT_TASK}: {message}")
    _write_record(root, run_id, layout.ROLLOUT_TASK, {"rollout": line})
    say(line)
    return line


def report(metadata_store: str, run_id: str, pipeline_name: str, root: str, settings: dict, node_ids: list,
           markdown_path: str, html_path: str, say: Say = progress.say):
    """The run's exit handler: runs whether the DAG completed, failed or was canceled.

    Reads the run's executions from ML Metadata and the records its tasks left,
    names the outcome (completed; refused; failed at a node with the first line
    of its error; stopped while a node ran), marks executions a killed pod left
    RUNNING as CANCELED, writes <root>/runs/<run id>/run_summary.json and the
    report, and releases the root's lease if this run holds it. Returns
    (metrics {name: value}, confusion matrix or None, the run's folder) for the
    KFP run page; the Markdown decision and the one-file HTML report go to the
    given artifact paths.
    """
    from ml_metadata import metadata_store as mlmd

    from reporting import run_summary

    try:
        run_id = tfx_node.resolve_run_id(run_id)
        marker.inspect(root)  # the ingest task refused it: nothing of the run is written into a folder of the user's
    except CommandError as error:
        fail_task(str(error))
    records = _read_records(root, run_id)
    refused = records.get(layout.INGEST_TASK, {}).get("refused")
    before_json = records.get(layout.INGEST_TASK, {}).get("before_the_dag")
    before = lifecycle.BeforeTheDag.from_json(before_json) if before_json else None
    store = None
    if not refused:  # a refused run touched nothing; the store belongs to the run that holds the root
        try:
            tfx_node.check_store(metadata_store)
            store = mlmd.MetadataStore(tfx_node.connection_config(metadata_store))
        except CommandError as error:
            records.setdefault(layout.REPORT_TASK, {"error": str(error)})
    stopped = store_health.cancel_unfinished_in(store, lambda run: run == run_id) if store else []
    summary = run_summary.summarize_run(store, pipeline_name, run_id=run_id)
    summary.run_id = run_id
    rolled_out = records.get(layout.ROLLOUT_TASK, {}).get("rollout")
    run_folder = RunLayout(root).run_dir(run_id)

    def release() -> str | None:
        if not refused and lease.release(root, run_id):
            return f"released the pipeline root {root}"
        return None

    try:
        error, training = outcome_error(summary, records, refused, stopped, frozenset(node_ids)), settings["training"]
    except BaseException:  # a damaged record: the lease is released all the same, and the fault shown
        release()
        raise
    try:
        page = lifecycle.after_the_dag(
            summary, before, run_folder, training, say=say, error=error,
            notes=[f"serving: {rolled_out}"] if rolled_out else [], release=release)
    except CommandError as error:
        fail_task(str(error))
    with open(html_path, "w") as f:
        f.write(inline_images(storage.backend.read(page).decode(), posixpath.dirname(page)))
    with open(markdown_path, "w") as f:
        f.write(decision_markdown(summary, page))
    metrics = dict(summary.metrics.get("candidate", {}))
    metrics |= {f"baseline_{name}": value for name, value in summary.metrics.get("baseline", {}).items()}
    if summary.pushed_version is not None:
        metrics["pushed_version"] = summary.pushed_version
    return metrics, summary.confusion_matrix, run_folder


def outcome_error(summary, records: dict[str, dict], refused: str | None, stopped: list[str],
                  expected: frozenset[str]) -> str | None:
    """How the run ended, if not completed: one line for the summary's FAILED field (None: completed)."""
    if refused:
        return f"refused: {refused}"
    failed = [node.node_id for node in summary.nodes if node.state == "failed"]
    if failed:
        reason = records.get(failed[0], {}).get("error") or "its error is in the task's log"
        return f"failed at {failed[0]}: {reason}"
    if stopped:
        return (f"stopped while {', '.join(stopped)} ran (its pod was killed, or the run canceled, and not "
                "retried to the end); marked CANCELED in ML Metadata")
    errors = [(task, record["error"]) for task, record in records.items() if record.get("error")]
    if errors:
        return f"failed at {errors[0][0]}: {errors[0][1]}"
    ran = {node.node_id for node in summary.nodes}
    if not ran:
        return "canceled or failed before any node ran (see the tasks' logs)"
    if not expected <= ran:
        return f"canceled or failed before {', '.join(sorted(expected - ran))} ran (see the tasks' logs)"
    return None


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


def inline_images(html: str, folder: str) -> str:
    """The report with its PNG figures (under `folder`, any storage) embedded, so it is one file (KFP shows one
    HTML artifact file)."""
    def embed(match):
        path = posixpath.join(folder, match.group(1))
        if not storage.backend.exists(path):
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(storage.backend.read(path)).decode()}"'
    return re.sub(r'src="([^":/]+\.png)"', embed, html)


def monitor(root: str, metadata_store: str, settings: dict, html_path: str, markdown_path: str,
            say: Say = progress.say) -> str:
    """A drift check of the root's traffic (monitoring.monitor, as `monitor --root` runs it) with the deployment's
    store; returns its one-line verdict. A refusal (no served model, too small a window, not a root, an
    unreachable store) ends the task with that line: nothing was checked."""
    from monitoring import monitor as monitor_lib
    from monitoring.settings import MonitorSettings

    defaults = MonitorSettings()
    # KFP hands numbers over as floats: typed as MonitorSettings' defaults are
    try:  # a package compiled by another release may hold a setting this one refuses: the task's one line says so
        chosen = MonitorSettings(**{name: type(getattr(defaults, name))(value) for name, value in settings.items()})
    except (ValueError, TypeError) as error:
        fail_task(f"{layout.MONITOR_TASK}: the package's settings cannot make a check: {error}; compile the "
                  "monitoring package again")
    try:
        if marker.inspect(root).state == marker.NEW:
            raise CommandError(f"{root} is not a pipeline root (nothing was ever run there): no model to monitor; "
                               "nothing was checked")
        tfx_node.check_store(metadata_store)
        check = monitor_lib.check(RunLayout(root), chosen, metadata_store)
    except monitor_lib.NothingToCheckYet as nothing:  # a recurring check's first hours: no failed run each hour
        with open(html_path, "w") as f:
            f.write(f"<!doctype html><meta charset=utf-8><title>Drift check</title>"
                    f"<p>{html.escape(str(nothing))}</p>\n")
        with open(markdown_path, "w") as f:
            f.write(f"**Nothing to check yet**: {str(nothing).removeprefix('nothing to check yet: ')}\n")
        say(str(nothing))
        return str(nothing)
    except CommandError as error:
        fail_task(f"{layout.MONITOR_TASK}: {error}")
    page = str(check.page)
    with open(html_path, "w") as f:
        f.write(inline_images(storage.backend.read(page).decode(), posixpath.dirname(page)))
    with open(markdown_path, "w") as f:
        f.write(f"**{'Drift' if check.result['drift'] else 'No drift'}**: {check.line}\n")
    say(check.line)
    return check.line
