"""How a command ends: its exit codes, and how an error is worded in the one line a user sees.

Scripts and schedulers read the exit codes, so they are part of the contract:
0 done, 1 the run failed (its summary says where), 2 refused before any work
(bad input or settings: nothing changed), 3 another run holds the root, 130
interrupted.
"""

from __future__ import annotations

OK, FAILED, REFUSED, BUSY, INTERRUPTED = 0, 1, 2, 3, 130


class CommandError(Exception):
    """A command cannot do what was asked; its message is the line the user sees, `exit_code` what it exits
    with. The command line's main() alone prints it."""

    exit_code = REFUSED


class RunFailedError(CommandError):
    """The work started and failed; the message says where (and where its summary is)."""

    exit_code = FAILED


def first_line(error: BaseException, with_type: bool = False) -> str:
    """The first line of an error's message (libraries put tracebacks and hints below it); its type's name
    when it has no message."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return f"{type(error).__name__}: {line}" if with_type else line
