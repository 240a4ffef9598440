"""How a command ends: its exit codes, the error classes every foreseeable fault derives from, and the one
line a user sees for it.

Scripts and schedulers read the exit codes, so they are part of the contract:
0 done, 1 the run failed (its summary says where), 2 refused before any work
(bad input or settings: nothing changed), 3 another run holds the root, 130
interrupted. A module raises one of the classes below (or a class of its own
derived from one); only `end` prints it, for the command line and for the
Kubeflow tasks alike (`fail_task`). Callers catch CommandError, never a list
of classes; no other module chooses an exit code. An error that is not a
CommandError is a bug, and keeps its traceback (tests/contract/test_errors.py
lists the few internal ones, each caught where it is raised).
"""

from __future__ import annotations

import re
import shutil
import sys
from typing import NoReturn

OK, FAILED, REFUSED, BUSY, INTERRUPTED = 0, 1, 2, 3, 130


class CommandError(Exception):
    """A foreseeable fault: a command cannot do what was asked. Its message is the line the user sees,
    `exit_code` what it exits with. By default a refusal: found before any work, nothing changed."""

    exit_code = REFUSED

    def line(self, command: str | None = None) -> str:
        """The one line for the user; `command` is the command that was running, for errors that need it."""
        return str(self)


class RunFailedError(CommandError):
    """The work started and failed; the message says where (and where its summary is)."""

    exit_code = FAILED


class BusyError(CommandError):
    """Another run holds what this one needs; nothing was touched. Try again later."""

    exit_code = BUSY


class InterruptedRunError(RunFailedError):
    """The run was interrupted (Ctrl-C) and something after it failed too (its summary could not be written)."""

    exit_code = INTERRUPTED


class StorageFaultError(CommandError):
    """The storage under a root failed a read or a write (a full disk, a permission, a file where a folder
    belongs): the work stopped where it was; what was committed before is read as it was."""

    exit_code = FAILED


# What the storage libraries raise, named rather than imported: importing TensorFlow or ML Metadata here would
# cost every command seconds, however it ends. (module, class) of a base class in the error's MRO.
_STORAGE_FAULTS = {("builtins", "OSError"), ("tensorflow.python.framework.errors_impl", "OpError"),
                   ("ml_metadata.errors", "StatusError"), ("sqlite3", "Error")}


def storage_fault(error: BaseException) -> StorageFaultError | None:
    """The one-line error for a fault of the storage (None: `error` is not one, so it is a bug)."""
    if not any((cls.__module__, cls.__qualname__) in _STORAGE_FAULTS for cls in type(error).__mro__):
        return None
    return StorageFaultError(f"a storage fault stopped it: {first_line(error, with_type=True)}; fix that and run "
                             "the command again")


def end(error: CommandError, command: str | None = None) -> int:
    """Prints the error's one line to stderr, after what stdout holds (`2>&1` puts the line below the output it
    speaks of, as a terminal does); returns its exit code."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):  # stdout's own fault (this line is about another), closed, None
        pass
    print(f"error: {error.line(command)}", file=sys.stderr, flush=True)
    return error.exit_code


def fail_task(line: str) -> NoReturn:
    """Ends an orchestrator's task (a Kubeflow pod) with `line` and exit code FAILED, whatever stopped it: the
    orchestrator reads any non-zero code as "the task failed", and the run's summary says why. A SystemExit, not
    an exception: kfp's executor would print a traceback for one."""
    raise SystemExit(end(RunFailedError(line)))


def undecodable_escaped(name: str) -> str:
    """`name` as text that can be written anywhere: the bytes of a name that is not UTF-8, which Python keeps as
    lone surrogates (and which no report, table or tf.Example can hold), as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown_name(name: str) -> str:
    """A name as a line can show it: a byte that is not UTF-8 as \\xNN (Python keeps it as a lone surrogate, which
    no terminal can print), a control character (a carriage return, a newline, an escape) as its escape."""
    return printable(undecodable_escaped(name))


def printable(text: str) -> str:
    """`text` as it can stand in one line of a terminal: names and records from files (a file name, a push
    record's model URI) may hold a newline, which would forge a line of the output, or an escape sequence, which
    the terminal would obey; both are shown as escapes."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


# TensorFlow wraps an op's message in its plumbing: "{{function_node __wrapped__DecodeJpeg_device_/job:localhost/
# ...}} MESSAGE [Op:DecodeJpeg] name: ". Nothing of it helps a user; the message between is the fault. Stripped
# from TensorFlow's errors only (named, not imported, as above): another error's text is kept as it is.
_TF_OP_PLUMBING = re.compile(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\](\s*name:.*)?$")
_TF_ERRORS = "tensorflow.python.framework.errors_impl"
# A graph's op that fails (a session's run, a tf.function's call) opens with this header, then where the op was
# defined (a "Detected at node" line, the stack's lines, in a session a "Node:" line), then the op's own message.
_TF_GRAPH_HEADER = "Graph execution error:"
_TF_GRAPH_NOISE = re.compile(r"^(Detected at node .*|Node: .*|\s+.*|\[\[.*)$")


def first_line(error: BaseException, with_type: bool = False) -> str:
    """The first line of an error's message (libraries put tracebacks and hints below it), without
    TensorFlow's op plumbing around it; its type's name when it has no message."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
        # copytree gathers every file's fault into one error: (source, target, why) each; the first says what
        failed = error.args[0]
        reason = (str(failed[0][2]) if len(failed[0]) == 3 else str(failed[0])).strip()
        reason = (reason.splitlines() or [type(error).__name__])[0]
        more = f" (and {len(failed) - 1} more file{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
        return f"{type(error).__name__}: {reason}{more}" if with_type else f"{reason}{more}"
    text = str(error).strip()
    lines = text.splitlines() or [""]
    line = lines[0]
    if any(cls.__module__ == _TF_ERRORS for cls in type(error).__mro__):
        if line.strip() == _TF_GRAPH_HEADER:
            line = next((rest for rest in lines[1:] if rest.strip() and not _TF_GRAPH_NOISE.match(rest)), line)
        line = _TF_OP_PLUMBING.sub("", line).strip()
    if not line:
        return type(error).__name__
    return f"{type(error).__name__}: {line}" if with_type else line
