"""One run per pipeline root at a time.

Two LocalDagRunner runs on one SQLite metadata store can fail with "database
is locked" and do not share cache. A second run (an overlapping cron job, say)
must exit at once without touching the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import socket
import time

LOCK_FILE = ".pipeline.lock"


class PipelineBusyError(RuntimeError):
    """Another run holds the lock of this pipeline root."""


@contextlib.contextmanager
def exclusive_run(output_dir: str | os.PathLike):
    """Holds an exclusive, non-blocking lock on `<output_dir>/.pipeline.lock`.

    The lock is an OS file lock: it is released when the process ends, even
    when it is killed, so a crashed run never blocks the next one.
    """
    path = pathlib.Path(output_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PipelineBusyError(
                f"another run of this pipeline is in progress ({holder}); lock file {path}. "
                "Not starting a second one on the same metadata store.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield path
    finally:
        handle.close()
