"""Runs of a compiled Kubeflow package: rehearsed on this machine with kfp's local runner, or submitted to and
scheduled on a Kubeflow Pipelines cluster through kfp's client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import posixpath
import re
import time
import uuid
from typing import Callable

from contract import json_files, layout
from contract.errors import CommandError, first_line
from contract.settings import setting
from orchestration.engines import warm_tasks
from orchestration.engines.kubeflow import report_component
from orchestration.engines.local_schedule import CronError
from orchestration.engines.packages import package_pipeline_root, package_spec, task_constants


class KubeflowUnreachableError(CommandError, RuntimeError):
    """The KFP endpoint did not answer; the message names it."""


@dataclasses.dataclass(frozen=True)
class LocalRun:
    run_id: str
    failure: str | None  # kfp.local's line naming the failed task; None when the DAG completed
    log: str  # kfp.local's output and every task's


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
ERRORS_SHOWN = 3  # of a failed task's own "error: ..." lines, the last ones


class _TaskLines(io.TextIOBase):
    """Where kfp.local writes (its own log and each task's output, thousands of lines a run): all of it into the
    log file; to `say`, one line per task with its status and seconds, and a failed task's own error lines."""

    def __init__(self, log, say: Callable[[str], None]):
        self.log, self.say = log, say
        self.partial, self.said_errors, self.started = "", [], time.monotonic()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line).strip())
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def _line(self, line: str) -> None:
        if _STARTED.search(line):
            self.said_errors, self.started = [], time.monotonic()
        elif finished := _FINISHED.search(line):
            self.say(f"  {finished[1]}: {finished[2].lower()} ({time.monotonic() - self.started:.0f} s)")
            if finished[2] != "SUCCESS":
                for error in self.said_errors[-ERRORS_SHOWN:]:
                    self.say(f"    {error}")
        elif line.startswith("error:"):  # a task's one line of why it stopped
            self.said_errors.append(line)


def run_locally(package: str, arguments: dict, kfp_outputs: str, say: Callable[[str], None],
                run_id: str | None = None, warm: bool = True) -> LocalRun:
    """Runs a compiled package on this machine with the kfp SDK's own local runner.

    Every task runs as a subprocess of this Python (the environment the image
    holds), in the package's dependency order; KFP's artifacts go under
    `kfp_outputs`, and what kfp.local and the tasks print into
    `<kfp_outputs>/<run id>.log`, while `say` gets one line per task.
    kfp 2.13's local runner stops at the first failed task and never runs an
    exit handler after a failure, so when the DAG fails the exit handler (the
    report) is run here, as the backend runs it, with the package's own inputs
    and the same run id. `warm`: the tasks start from a process that has imported the libraries once
    (orchestration.engines.warm_tasks); off, each task imports them in a fresh process, as a pod does.
    """
    run_id = run_id or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    os.makedirs(kfp_outputs, exist_ok=True)
    log = os.path.join(kfp_outputs, f"{run_id}.log")
    say(f"run {run_id}: each task's output in {log}")
    with open(log, "w", encoding="utf-8", errors="backslashreplace") as f, \
            contextlib.redirect_stdout(_TaskLines(f, say)):
        with warm_tasks.task_processes(warm) as zygote:
            failure = _run_package(package, arguments, kfp_outputs, run_id)
        if zygote is not None:  # stopped as the block ended: how many tasks started warm, and why not the rest
            f.write(zygote.served)
        return LocalRun(run_id, failure, log)


def _run_package(package: str, arguments: dict, kfp_outputs: str, run_id: str) -> str | None:
    """kfp.local's run of the package, the exit handler run after a failure; the failure's line, or None."""
    from kfp import local
    from kfp.local import placeholder_utils

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=kfp_outputs, raise_on_error=True)
    # The local runner draws a random number as the run id (the PIPELINE_JOB_ID placeholder); choosing it here
    # lets the report that follows a failure speak of the same run, and names the run's folder.
    chosen = placeholder_utils.make_random_id
    placeholder_utils.make_random_id = lambda: run_id
    try:
        try:
            _load_package(package)(**arguments)
            return None
        except RuntimeError as error:  # kfp.local names the failed task (its log is above), in terminal colours
            failure = _plain_first_line(error) or "the local run failed"
        except KeyboardInterrupt:  # a canceled run: the backend runs the exit handler then too (it frees the root)
            _run_exit_handler(package)
            raise
        return failure + _run_exit_handler(package)
    finally:
        placeholder_utils.make_random_id = chosen


def _run_exit_handler(package: str) -> str:
    """Runs the package's report task alone, with its own inputs; '' or what went wrong with it (the monitoring
    package has none: '')."""
    inputs = task_constants(package, layout.REPORT_TASK)
    if not inputs:
        return ""
    try:
        report_component(_package_image(package))(**inputs)
    except RuntimeError as error:
        return f"; its exit handler failed too: {_plain_first_line(error)}"
    return ""


def _plain_first_line(error: BaseException) -> str:
    return first_line(RuntimeError(_ANSI.sub("", str(error))))


def run_outcome(folder: str) -> str | None:
    """The error the exit handler wrote into a run's summary (None: none written, or the run completed)."""
    path = posixpath.join(folder, layout.SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    try:
        return json_files.read_local_json(path).get("error")
    except json_files.UnreadableFileError as error:
        return f"its summary is unreadable: {error}"


def _load_package(package: str):
    from kfp import components

    return components.load_component_from_file(package)


def _package_image(package: str) -> str:
    executors = package_spec(package).get("deploymentSpec", {}).get("executors", {})
    return next(iter(executors.values()))["container"]["image"]


def _client(host: str):
    import kfp

    try:
        client = kfp.Client(host=host)
        client.list_experiments(page_size=1)  # the client connects lazily: ask something now
    except Exception as error:  # urllib3, requests and kfp_server_api raise different types
        raise KubeflowUnreachableError(f"cannot reach Kubeflow Pipelines at {host}: {first_line(error)}") from None
    return client


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where a run or a recurring run goes on the cluster's API, besides its endpoint."""

    experiment: str = setting("cats-vs-dogs", "KFP experiment.")


def submit(package: str, run_name: str, arguments: dict, pipeline_root: str | None, host: str,
           cluster: Cluster) -> str:
    """Starts one run of the package; returns the run id. KFP's cache stays off: TFX's cache decides."""
    client = _client(host)
    run = client.create_run_from_pipeline_package(
        package, arguments=arguments, run_name=run_name, experiment_name=cluster.experiment,
        pipeline_root=pipeline_root or package_pipeline_root(package), enable_caching=False)
    return run.run_id


def schedule(package: str, job_name: str, cron: str, arguments: dict, pipeline_root: str | None, host: str,
             cluster: Cluster) -> str:
    """Creates a recurring run, one run at a time; `cron` has six fields, seconds first (KFP's format)."""
    check_kfp_cron(cron)
    client = _client(host)
    experiment_id = client.create_experiment(cluster.experiment).experiment_id
    job = client.create_recurring_run(
        experiment_id=experiment_id, job_name=job_name, cron_expression=cron, pipeline_package_path=package,
        params=arguments, pipeline_root=pipeline_root or package_pipeline_root(package), enable_caching=False,
        max_concurrency=1)
    return job.recurring_run_id


def check_kfp_cron(cron: str) -> None:
    fields = cron.split()
    if len(fields) != 6:
        raise CronError(f"KFP cron expressions have 6 fields (seconds first), e.g. '0 0 3 * * *'; got {cron!r}")
