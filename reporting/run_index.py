"""A local root's runs, each in a folder of its own, and the newest one's report shown with the list of them.

Every local run writes its summary and report under `<root>/runs/<run id>/`, as a
Kubeflow run does. The newest run's are then copied to `<root>/run_summary.json`
and `<root>/report/`, where that report gets a section listing the root's runs
(newest first) with their outcomes and a link to each one's report, the run that
pushed the served version marked: a failed or rejected run never hides the report
of the model still served. The newest KEPT_RUNS run folders are kept.
"""

from __future__ import annotations

import html
import json
import os
import pathlib
import shutil
import time
import urllib.parse
import uuid

from contract import layout
from contract import metadata as metadata_lib
from contract.layout import RunLayout

KEPT_RUNS = 30
_RUNS = RunLayout("").runs_dir  # runs/, relative to the root
_PUSHED = "blessed, pushed as version "
SLOT = "<!-- the root's runs -->"  # where templates/report.html.j2 takes the list, in the root's copy only


def runs(root: pathlib.Path) -> list[dict]:
    """The runs of the root with a readable summary, newest first: folder, run id, when, outcome, pushed version.
    A folder that is a link, or whose summary is not one a run wrote, is passed over (and never removed)."""
    runs_dir = pathlib.Path(RunLayout(root).runs_dir)
    found = []
    for folder in runs_dir.iterdir() if runs_dir.is_dir() and not runs_dir.is_symlink() else ():
        path = folder / layout.SUMMARY_FILE
        try:
            folder.name.encode("utf-8")
            if folder.is_symlink() or not path.is_file() or path.is_symlink():
                continue
            summary = json.loads(path.read_text())
            said = outcome(summary)
            when = path.stat().st_mtime
        except (OSError, ValueError, TypeError, AttributeError, IndexError, RecursionError):
            continue
        found.append({"folder": folder.name, "run_id": str(summary.get("run_id") or folder.name), "when": when,
                      "outcome": said,
                      # the version this run pushed; a cached or already served push is an earlier run's
                      "pushed_version": summary.get("pushed_version") if said.startswith(_PUSHED) else None,
                      "report": (folder / layout.REPORT_DIR / layout.REPORT_PAGE).is_file()})
    return sorted(found, key=lambda run: (run["when"], run["folder"]), reverse=True)


def _cut(line: str, most: int = 240) -> str:
    """A long line kept to `most` characters by its start (what failed) and its end (what to do about it, as an
    error's line ends), the middle marked as left out: the run's own report has the whole."""
    if len(line) <= most:
        return line
    tail = most // 3
    return f"{line[:most - tail - 3].rstrip()} … {line[-tail:].lstrip()}"


def outcome(summary: dict) -> str:
    """A run's outcome in a few words: pushed, blessed, not blessed, or failed with the first line of why."""
    if not isinstance(summary, dict):
        raise ValueError("not a run summary")
    if summary.get("error") and str(summary["error"]).strip():
        lines = str(summary["error"]).strip().splitlines()
        # a line that ends in ':' announces the reasons below it (the data gate's): the first of them too
        said = _cut(f"{lines[0]} {lines[1].strip()}" if lines[0].endswith(":") and len(lines) > 1 else lines[0])
        return said if said.startswith(("failed", "interrupted", "refused")) else f"failed: {said}"
    version = summary.get("pushed_version")
    nodes = [node for node in summary.get("nodes") or [] if isinstance(node, dict)]
    if version is not None and (summary.get("already_served") or any(
            node.get("node_id") == metadata_lib.PUSHER and node.get("state") == "cached" for node in nodes)):
        served = summary.get("served_version")
        return f"nothing new pushed; version {served if isinstance(served, int) and served else version} is served"
    if version is not None:
        return f"{_PUSHED}{version}"
    if summary.get("blessed") is True and summary.get("withheld"):
        return "blessed; not pushed: a rollback withdrew these weights"
    if summary.get("blessed") is True:
        return "blessed; nothing new pushed"
    if summary.get("blessed") is False:
        return "not blessed" + (f": {summary['decision']}" if summary.get("decision") else "")
    return "every component cached or skipped; nothing pushed"


def publish(root: pathlib.Path, run_folder: pathlib.Path, served_version: int | None,
            rolled_back_to: int | None = None) -> pathlib.Path:
    """Copies the run's summary and report to the root (the report with the list of the root's runs), removes
    the run folders beyond the newest KEPT_RUNS but the served model's run; returns the root's report page.
    `rolled_back_to`: the version the served one is a rollback to (its model's run pushed that one)."""
    where = RunLayout(root)
    report = run_folder / layout.REPORT_DIR
    linked = [path for path in (report, *report.rglob("*")) if path.is_symlink()] if not report.is_symlink() \
        else [report]
    if linked:  # the run wrote none: copying or writing through one would reach a folder of someone else's
        raise OSError(f"{linked[0]} is a symbolic link, which the pipeline never writes")
    # The newest first; this run's folder is kept whatever the clocks said of the others.
    others = [run for run in runs(root) if run["folder"] != run_folder.name]
    # The report of the model still served is kept past the bound: a month of nightly runs that pushed nothing
    # must not take it.
    served = _served_run(others, served_version, rolled_back_to)
    for old in others[KEPT_RUNS - 1:]:
        if old is not served:
            shutil.rmtree(pathlib.Path(where.runs_dir, old["folder"]), ignore_errors=True)
    listed = [run for run in runs(root) if run["folder"] == run_folder.name] + others[:KEPT_RUNS - 1]
    listed += [served] if served is not None and served not in listed else []
    final = pathlib.Path(where.report_dir)
    incoming = final.with_name(f".{final.name}.incoming")
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        shutil.copytree(report, incoming, symlinks=True)
        page = incoming / layout.REPORT_PAGE
        page.write_text(page.read_text().replace(
            SLOT, section(listed, run_folder.name, served_version, rolled_back_to), 1))
        shutil.rmtree(final, ignore_errors=True)
        incoming.rename(final)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    for name in (layout.SUMMARY_FILE, pathlib.Path(where.tfdv_statistics_page).name):
        if (run_folder / name).is_file() and not (run_folder / name).is_symlink():
            _copy_whole(run_folder / name, root / name)
    return final / layout.REPORT_PAGE


def started(root: pathlib.Path, served_version: int | None, rolled_back_to: int | None = None) -> pathlib.Path:
    """The root's report page while a run goes on (or after one was killed before it wrote its own): it says so,
    and lists the runs with their reports, the served model's marked. The last run's page must not stand in for
    this one's, nor may the reports of earlier runs disappear with it."""
    final = pathlib.Path(RunLayout(root).report_dir)
    if final.is_symlink():
        raise OSError(f"{final} is a symbolic link, which the pipeline never writes")
    incoming = final.with_name(f".{final.name}.incoming")
    shutil.rmtree(incoming, ignore_errors=True)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    body = section(runs(root), "", served_version, rolled_back_to,
                   intro=f"A run started at {when} and has written no report yet: it is still running, or it "
                         "stopped before it could (killed, or the machine went down).")
    try:
        incoming.mkdir()
        (incoming / layout.REPORT_PAGE).write_text(
            f"<!doctype html><html><head><meta charset=utf-8><title>Run in progress</title></head><body>\n"
            f"<h1>A run of this root is in progress</h1>\n{body}\n</body></html>\n")
        shutil.rmtree(final, ignore_errors=True)
        incoming.rename(final)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return final / layout.REPORT_PAGE


def _copy_whole(source: pathlib.Path, target: pathlib.Path) -> None:
    """`target` replaced by a copy of `source` whole or not at all (a new temporary file, renamed into place)."""
    temporary = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(source, "rb") as read, open(temporary, "xb") as write:  # "x": never through a planted link
            shutil.copyfileobj(read, write)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _served_run(listed: list[dict], served_version: int | None, rolled_back_to: int | None) -> dict | None:
    """The run that pushed the served model (for a rollback, the version rolled back to), if listed."""
    pushed = rolled_back_to if rolled_back_to is not None else served_version
    return next((run for run in listed if pushed is not None and run["pushed_version"] == pushed), None)


def section(listed: list[dict], current: str, served_version: int | None, rolled_back_to: int | None = None,
            intro: str = "This page is the newest run's report.") -> str:
    """The runs of the root as HTML for the root's copy of the newest report (links relative to report/)."""
    served = _served_run(listed, served_version, rolled_back_to)
    lines = ['<h2 id=runs>Runs of this root</h2>',
             f"<p>{intro} Each run keeps its own under {_RUNS}/ (the newest {KEPT_RUNS}, and the served "
             "model's).</p>"]
    if served is not None and served["folder"] != current:
        rollback = f" (a rollback to version {rolled_back_to})" if rolled_back_to is not None else ""
        report = (f'<a href="{_link(served)}">its report</a>' if served["report"] else
                  "it wrote no report (it stopped after the push); its summary is in its folder")
        lines.append(f'<p class="decision blessed">The served model, version {served_version}{rollback}, was '
                     f'pushed by run {html.escape(served["run_id"])}: {report}.</p>')
    lines.append("<table><tr><th>run</th><th>outcome</th><th>report</th></tr>")
    for run in listed:
        marks = [word for word, yes in (("this page", run["folder"] == current),
                                        ("serves now", served is not None and run is served)) if yes]
        name = html.escape(run["run_id"]) + (f" ({', '.join(marks)})" if marks else "")
        link = f'<a href="{_link(run)}">report</a>' if run["report"] else "none"
        lines.append(f"<tr><td>{name}</td><td>{html.escape(run['outcome'])}</td><td>{link}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _link(run: dict) -> str:
    folder = urllib.parse.quote(run["folder"])
    return html.escape(f"../{_RUNS}/{folder}/{layout.REPORT_DIR}/{layout.REPORT_PAGE}", quote=True)
