"""Scheduled local retraining with cron, and a drift check beside it.

Each scheduled run ingests the folder (new files make a new span, unchanged
data reuses the last one and everything stays cached) and runs the pipeline.
The run lock makes an overlapping run exit at once, so a slow run is never
doubled by the next tick. A second entry may run `monitor` on its own
schedule; a check takes the same lock (it writes the same metadata store), so
a tick that finds a run going exits at once and the next tick checks; both
append to the same log.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import subprocess
import sys

from contract.errors import CommandError
from contract.layout import RunLayout
from orchestration.root import marker

RUN_MARK = _MARK = "# cats-vs-dogs-tfx:"
MONITOR_MARK = "# cats-vs-dogs-tfx-monitor:"  # a drift check's entry: replaced apart from the run's


class CronError(CommandError, ValueError):
    """A schedule cron cannot take (a cron expression of the wrong form, a path that is not one line, no crontab
    or one that refuses the table); the message says which and what to do."""


# Each field's name, its values and the names cron takes for them (months and weekdays, first three letters).
_FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of the month", 1, 31, ()),
           ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
           ("day of the week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")))


def check_cron(cron: str) -> None:
    """The five fields of a crontab schedule, each a list of `*`, values or ranges with an optional `/step`, within
    the field's values: what cron itself takes, so that a line printed here is never refused by `crontab`."""
    fields = cron.split()
    if len(fields) != 5:
        raise CronError(f"a crontab schedule has 5 fields (minute hour day month weekday), e.g. '0 3 * * *'; "
                         f"got {cron!r}")
    for field, (name, low, high, names) in zip(fields, _FIELDS):
        problem = _field_problem(field, low, high, names)
        if problem:
            raise CronError(f"the schedule {cron!r}: its {name} field {field!r} {problem} (values {low}-{high}"
                            f"{', or ' + names[0] + '-' + names[-1] if names else ''}; e.g. '0 3 * * *')")


def _field_problem(field: str, low: int, high: int, names: tuple[str, ...]) -> str | None:
    def value(text: str) -> int | None:
        if text.isascii() and text.isdigit():
            return int(text)
        return low + names.index(text.lower()) if text.lower() in names else None

    for item in field.split(","):
        span, slash, step = item.partition("/")
        if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
            return f"has a step {step!r}, not a whole number above 0"
        if span == "*":
            continue
        first, dash, last = span.partition("-")
        bounds = [value(first), value(last) if dash else value(first)]
        if None in bounds:
            return f"has {item!r}, which is not a value, a range or *"
        if not all(low <= bound <= high for bound in bounds):
            return f"has {item!r}, outside the field's values"
        if bounds[0] > bounds[1]:
            return f"has the range {span!r}, which ends before it starts"
        if slash and not dash:
            return f"has {item!r}: a step goes with * or a range"
    return None


def check_one_line(what: str, value: str) -> None:
    """cron reads one entry per line: a newline (or another control character) in a path would end the entry and
    start another, which cron runs as a command of its own."""
    bad = sorted({char for char in value if ord(char) < 32 or ord(char) == 127})
    if bad:
        shown = ", ".join(repr(char) for char in bad)
        raise CronError(f"{what} {value!r} contains a control character ({shown}): a crontab entry is one line; "
                        "rename the folder or give another")


def _mark(output_dir: pathlib.Path, mark: str = _MARK) -> str:
    """The comment that ends this output dir's entry; quoted as the shell would, so the comment is one word."""
    return f"{mark}{shlex.quote(str(output_dir))}"


def cron_line(cron: str, project_dir: pathlib.Path, data_dir: pathlib.Path | None, output_dir: pathlib.Path,
              python: str | None = None, source_flag: str = "--data-dir") -> str:
    """The crontab line: cd to the project, run the pipeline on the source (`source_flag` and `data_dir`; None for a
    flag that names no path, --demo), append to a log in the output dir. The run takes its other settings from the
    root's record (orchestration.root.run_settings). marker.NotARootError for an output dir that is not a pipeline root
    (nor empty)."""
    output_dir = output_dir.resolve()
    source = source_flag
    if data_dir is not None:
        check_one_line(source_flag, str(data_dir.resolve()))
        source += " " + shlex.quote(str(data_dir.resolve()))
    return _entry(cron, project_dir, output_dir, python, f"run {source} --output-dir {shlex.quote(str(output_dir))}",
                  _MARK)


def monitor_line(cron: str, project_dir: pathlib.Path, output_dir: pathlib.Path, python: str | None = None) -> str:
    """The crontab line of a drift check of the output dir's traffic (`monitor`), logged as the runs are."""
    output_dir = output_dir.resolve()
    return _entry(cron, project_dir, output_dir, python, f"monitor --output-dir {shlex.quote(str(output_dir))}",
                  MONITOR_MARK)


def _entry(cron: str, project_dir: pathlib.Path, output_dir: pathlib.Path, python: str | None, arguments: str,
           mark: str) -> str:
    check_cron(cron)
    check_one_line("the schedule", cron)
    marker.inspect(output_dir)  # each run would refuse a folder of the user's, after cron's shell wrote its log there
    python = python or sys.executable
    for what, path in (("--output-dir", output_dir), ("the project folder", project_dir),
                       ("the Python interpreter", python)):
        check_one_line(what, str(path))
    if "\\%" in arguments + str(project_dir) + str(python):  # cron reads \% as %: the shell would see another path
        raise CronError("a path of the entry holds a backslash before a %, which cron's escaping cannot carry: "
                        "rename the folder")
    _check_log(str(RunLayout(output_dir).schedule_log))
    # The log's folder is made first: the shell opens `>>` before the run could create the output directory.
    log = shlex.quote(str(RunLayout(output_dir).schedule_log))
    # Each entry's output opens with a line of its own (the command and when it started): the log holds every
    # night's output one after another.
    header = shlex.quote(f"=== {arguments.split()[0]} ")
    # A night that fails, is refused or finds the root busy says so in one line on stderr, which cron mails to the
    # crontab's owner (MAILTO): with everything else in the log, cron would have nothing to send.
    # The mail's lines come from awk, which prints a path as it is (echo and printf read a backslash in it as an
    # escape, and printf's format would need a %, which cron's line escapes; the log's path reaches it in the
    # environment), from this entry's own part of the log: from the size it had after the header (a header that could
    # not be written quotes nothing, not an earlier night's error) up to another entry's header (the hourly check
    # writes into the same log while a night runs: its lines are not this night's). Said: a night that failed, was
    # refused or found the root busy, with its last error line; a check that queued images to label. A check the
    # nightly run refused (3) is no news.
    what, check = arguments.split()[0], mark == MONITOR_MARK
    said = shlex.quote(
        'BEGIN{mine = 1} /^=== /{mine = 0} mine && /^error[:] |FAILED[:] /{e = $0} mine && /; queued for labels: /'
        '{q = $0} END{c = ENVIRON["code"]; '
        f'if (c != 0{" && c != 3" if check else ""}) {{print "cats-vs-dogs-tfx: the scheduled {what} exited " c "; '
        'its output is in " ENVIRON["log"]; if (e != "") print e}'
        + (f' else if (c == 0 && q != "") print "cats-vs-dogs-tfx: the scheduled {what} found drift: " q' if check
           else "") + "}")
    command = (f"mkdir -p {shlex.quote(str(output_dir))} && cd {shlex.quote(str(project_dir))} && "
               f"{{ echo {header}\"$(date -u)\" === >> {log}; at=$(wc -c < {log} 2>/dev/null || echo 0); "
               f"{shlex.quote(python)} pipeline_runner.py {arguments} >> {log} 2>&1; code=$?; "
               f"tail -c +$((at + 1)) {log} 2>/dev/null | code=$code log={log} awk {said} >&2; }}")
    # cron turns an unescaped % into a newline
    return f"{cron} {command.replace('%', chr(92) + '%')} {_mark(output_dir, mark)}"


def _check_log(log: str) -> None:
    """cron's shell opens the log before the command starts: where it cannot append to it nothing runs, and only
    cron's mail would say why."""
    if os.path.lexists(log) and not os.path.isfile(log):
        raise CronError(f"the schedule's log {log} is not a file (a folder or a broken link): nothing scheduled "
                        "could write its output there; move it aside")
    if os.path.exists(log) and not os.access(log, os.W_OK):
        raise CronError(f"the schedule's log {log} is not writable: nothing scheduled could write its output there; "
                        "make it writable or move it aside")


def shell_command(line: str) -> str:
    """What cron hands to `sh` for an entry `_entry` wrote: the command after the 5 time fields, its `\\%` back to
    `%` (the mark stays: a comment to the shell). Pasted into a shell, it does what the nightly run will do."""
    command = line.split(None, 5)[5]
    return command.replace(chr(92) + "%", "%")


def install(line: str, output_dir: pathlib.Path, mark: str = _MARK) -> None:
    """Adds `line` to the user's crontab, replacing an entry of the same kind (`mark`: a run's or MONITOR_MARK)
    for the same output dir. Raises CronError, with the crontab left as it was, where there is no crontab
    command or it refuses the new table."""
    output_dir = pathlib.Path(output_dir).resolve()
    marks = (_mark(output_dir, mark), f"{mark}{output_dir}")  # and the unquoted mark of entries older code wrote
    try:
        current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        # Only "no crontab for USER" is an empty table: read as one, any other failure would replace the user's
        # entries (and their MAILTO) with this line.
        if current.returncode != 0 and "no crontab" not in current.stderr.lower():
            said = (current.stderr or current.stdout).strip().splitlines()
            why = said[0] if said else f"exit {current.returncode}"
            raise CronError(f"crontab -l could not read your crontab ({why}): it is unchanged; try again, or add the "
                            "line `schedule --local` prints by hand")
        lines = [entry for entry in (current.stdout.splitlines() if current.returncode == 0 else [])
                 if not entry.endswith(marks)]
        lines.append(line)
        written = subprocess.run(["crontab", "-"], input="\n".join(lines) + "\n", text=True, capture_output=True,
                                 env=dict(os.environ))
    except FileNotFoundError:
        raise CronError("no crontab command on this machine (cron is not installed): install cron, or run "
                        "`schedule --local` without --install and add the line it prints to your scheduler") from None
    if written.returncode != 0:
        said = (written.stderr or written.stdout).strip().splitlines()
        raise CronError(f"crontab refused the new table ({said[0] if said else f'exit {written.returncode}'}): "
                        "your crontab is unchanged (without --install, `schedule --local` prints the line)")
