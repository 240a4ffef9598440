"""One sink per root: the lock a sink holds on its traffic folder while it runs."""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath

from contract import storage
from contract.errors import BusyError

SINK_LOCK = ".sink.lock"  # in the traffic folder: held by the one sink recording into it


class SinkBusyError(BusyError):
    """Another traffic sink records into the root's traffic folder; nothing was touched."""


def hold_sink_lock(traffic_root: str) -> int | None:
    """Locally, an exclusive lock on <traffic>/.sink.lock held for the life of the process (the kernel releases
    it when the process dies, however it dies): a second sink would remove the first one's open batch as a killed
    sink's. SinkBusyError if another sink holds it. None on an object store: there the Deployment's one replica,
    replaced rather than rolled, is the guard."""
    if not storage.is_local(traffic_root):
        return None
    os.makedirs(traffic_root, exist_ok=True)
    fd = os.open(posixpath.join(traffic_root, SINK_LOCK), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
                 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SinkBusyError(f"another traffic sink records into {traffic_root} (it holds {SINK_LOCK}): one "
                                "sink per root; stop it first") from None
        raise
    return fd
