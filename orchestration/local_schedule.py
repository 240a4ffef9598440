"""Scheduled local retraining with cron.

Each scheduled run ingests the folder (new files make a new span, unchanged
data reuses the last one and everything stays cached) and runs the pipeline.
The run lock makes an overlapping run exit at once, so a slow run is never
doubled by the next tick.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import sys

from contract.layout import RunLayout

_MARK = "# cats-vs-dogs-tfx:"


class CronError(ValueError):
    """A cron expression of the wrong form for its scheduler; the message shows the right one."""


def check_cron(cron: str) -> None:
    if len(cron.split()) != 5:
        raise CronError(f"a crontab schedule has 5 fields (minute hour day month weekday), e.g. '0 3 * * *'; "
                         f"got {cron!r}")


def cron_line(cron: str, project_dir: pathlib.Path, data_dir: pathlib.Path, output_dir: pathlib.Path,
              python: str | None = None) -> str:
    """The crontab line: cd to the project, run the pipeline, append to a log in the output dir."""
    check_cron(cron)
    output_dir = output_dir.resolve()
    python = python or sys.executable
    # The log's folder is made first: the shell opens `>>` before the run could create the output directory.
    log = RunLayout(output_dir).schedule_log
    command = (f"mkdir -p {shlex.quote(str(output_dir))} && cd {shlex.quote(str(project_dir))} && "
               f"{shlex.quote(python)} pipeline_runner.py run --data-dir {shlex.quote(str(data_dir.resolve()))} "
               f"--output-dir {shlex.quote(str(output_dir))} >> {shlex.quote(str(log))} 2>&1")
    # cron turns an unescaped % into a newline
    return f"{cron} {command.replace('%', chr(92) + '%')} {_MARK}{output_dir}"


def install(line: str, output_dir: pathlib.Path) -> None:
    """Adds `line` to the user's crontab, replacing an entry for the same output dir."""
    mark = f"{_MARK}{pathlib.Path(output_dir).resolve()}"
    current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    lines = [entry for entry in (current.stdout.splitlines() if current.returncode == 0 else [])
             if not entry.endswith(mark)]
    lines.append(line)
    subprocess.run(["crontab", "-"], input="\n".join(lines) + "\n", text=True, check=True, env=dict(os.environ))
