"""The command's stdout, for a reader that may leave before the command is done (`predict ... | head`, a `tee`
that died): what the reader did not take is dropped, and the command goes on to its own end and exit code. A
training run whose log reader went away still finishes, records its run and reports it; a listing cut short by
`head` is what the person asked for, not a fault of the storage.

Any other failure to write stdout (a full disk under a redirection) is the storage fault it is: raised where the
write fails, or, for what Python buffered until the end, reported by `finish` in the command's one line.
"""

from __future__ import annotations

import os
import sys

from contract import errors

# What a write to a pipe or a socket raises once its reader has closed it.
_READER_GONE = (BrokenPipeError, ConnectionResetError)


class StdoutReaderMayLeave:
    """sys.stdout as the command line runs with it: every attribute is the stream's own but `write` and `flush`,
    which drop the output once the reader has gone."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except _READER_GONE:
            self._drop_the_rest()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except _READER_GONE:
            self._drop_the_rest()

    def _drop_the_rest(self) -> None:
        """/dev/null in the reader's place, under the same descriptor: what the stream still holds and everything
        written later go there, Python's own flush at exit included, and none of it raises again."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def guard() -> StdoutReaderMayLeave | None:
    """Puts the guard around sys.stdout for the rest of the process (none where stdout was closed: Python then
    has no stdout and prints nothing)."""
    if sys.stdout is None or isinstance(sys.stdout, StdoutReaderMayLeave):
        return sys.stdout
    sys.stdout = StdoutReaderMayLeave(sys.stdout)
    return sys.stdout


def finish(code: int | str | None) -> int | str | None:
    """The command's exit code once what stdout still holds is written: a write that fails now (a full disk) is
    printed as its one line and makes a successful command's code FAILED; Python's flush at exit then has
    nothing left to fail on."""
    stream = sys.stdout
    if stream is None:
        return code
    try:
        stream.flush()
    except OSError as error:
        errors.end(errors.storage_fault(error))
        if isinstance(stream, StdoutReaderMayLeave):
            stream._drop_the_rest()
        return errors.FAILED if code in (0, None) else code
    return code
