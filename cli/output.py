"""The command's stdout and stderr, for a reader that may leave before the command is done (`predict ... | head`,
`run ... 2>&1 | tee log` whose tee died, a terminal window closed on a run started with setsid): what the reader
did not take is dropped, and the command goes on to its own end and exit code. A training run whose log reader
went away still finishes, records its run and reports it; a listing cut short by `head` is what the person asked
for, not a fault of the storage.

Any other failure to write stdout (a full disk under a redirection) drops the rest of the output too, and the
command goes on (its work is not its log), then says so in one line as it ends, and exits FAILED: raising it where
a write failed would end the command wherever it printed, a progress line in a library's logging among them.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import sys

from contract import errors

# What a write to a pipe or a socket raises once its reader has closed it.
_READER_GONE = (BrokenPipeError, ConnectionResetError)


class ReaderMayLeave:
    """A text stream as the command line runs with it: every attribute is the stream's own but the writes and
    `flush`, which drop the output once the reader has gone or a write failed, and remember such a failure."""

    def __init__(self, stream, said_elsewhere: bool = True):
        self._stream = stream
        # stdout's failures are said on stderr as the command ends; stderr's have nowhere to be said, and only make
        # a successful command's exit code FAILED
        self._said_elsewhere = said_elsewhere
        self.failed: OSError | None = None  # the first failure to write that was not the reader leaving

    def write(self, text: str) -> int:
        if not self._said_elsewhere:
            _stdout_first()
        try:
            return self._stream.write(text)
        except OSError as error:
            self._failed(error)
            return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            self._failed(error)

    def _failed(self, error: OSError) -> None:
        """The rest is dropped: what the stream still holds and everything written later. A failure that is not
        the reader leaving is kept, for `finish` to say once."""
        reader_left = isinstance(error, _READER_GONE) or (error.errno == errno.EIO and self._is_a_terminal())
        self._drop_the_rest()
        if not reader_left:
            self.failed = self.failed or error

    def _is_a_terminal(self) -> bool:
        """A terminal that hung up answers EIO (and no longer says it is a terminal: isatty asks it); a file's
        EIO is a storage fault. So a character device, as terminals are, and disks and files are not."""
        try:
            return stat.S_ISCHR(os.fstat(self._stream.fileno()).st_mode)
        except (OSError, ValueError):
            return False

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


def _stdout_first() -> None:
    """What stdout holds, written before a line on stderr: with both on one file or pipe (`2>&1`, a log), a
    warning or an error comes below the output it speaks of, as a terminal shows them."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):  # stdout's own fault (kept by its guard), closed, or None
        pass


def _whole_writes(stream):
    """The stream, or, where its bytes go straight to the file (PYTHONUNBUFFERED=1), the same file through a
    buffer flushed at each line: a text stream over the bare file takes a short write (a disk that filled, a file
    size limit) as done and loses the rest unsaid, where a buffer writes the rest, or raises what stopped it."""
    raw = getattr(stream, "buffer", None)
    if not isinstance(raw, io.FileIO):
        return stream
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors,
                            line_buffering=True)


def guard() -> None:
    """Puts the guard around sys.stdout and sys.stderr for the rest of the process (not around one that was
    closed at the start: Python has none then, and prints what was meant for a closed stderr on stdout)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, ReaderMayLeave):
            setattr(sys, name, ReaderMayLeave(_whole_writes(stream), said_elsewhere=name == "stdout"))


def finish(code: int | str | None) -> int | str | None:
    """The command's exit code once what stdout still holds is written. A failure to write stdout (met during
    the command or now) is said in one line, and a successful command's code becomes FAILED."""
    stream, log = sys.stdout, sys.stderr
    if not isinstance(stream, ReaderMayLeave):
        return code
    stream.flush()
    if stream.failed is not None:
        errors.end(errors.StorageFaultError(f"its output could not be written: "
                                            f"{errors.first_line(stream.failed, with_type=True)}; what it printed "
                                            "from then on is lost"))
    if isinstance(log, ReaderMayLeave):
        log.flush()
    unsaid = stream.failed or (log.failed if isinstance(log, ReaderMayLeave) else None)
    return errors.FAILED if unsaid is not None and code in (0, None) else code
