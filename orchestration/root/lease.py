"""One run per pipeline root, whoever starts it: a lease file at <root>/.pipeline.lock.

A run takes the lease with an atomic create before it writes anything under
the root: an exclusive create (O_EXCL) for a local path or a path on a
Kubeflow deployment's volume, a create-if-absent precondition
(ifGenerationMatch=0) for gs://. The lease names the run and when it started,
and carries a heartbeat that whoever works for the run refreshes: the local
run's process, each Kubeflow task while it runs. The run's last step (the
local run's end, the Kubeflow exit handler) releases it.

A lease is stale, and the next run takes it over (saying so), when its
heartbeat is older than `stale_after` (a run whose pods all died), or at once
when its holder is provably dead: one process (a local run) that no longer
runs, judged only by a checker on the same host, the same boot and in the same
pid namespace (a process id means nothing outside its namespace: containers,
and pods with hostNetwork, share the host name and number their processes
from 1), with the process's start time to rule out a reused id. A lease that
does not say where its process lives (written before these were recorded) is
judged by its heartbeat only. Every change to an existing lease is conditional
on the lease read before it (orchestration.root.lease_storage), so two runs never
both take over one stale lease. Renewing the lease retries storage errors, and
reports lasting ones apart from a lost lease (a retried task may succeed; a lost
lease is final).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import socket
import threading
import time

from contract.errors import BusyError, CommandError, RunFailedError
from orchestration.root import lease_storage

LEASE_FILE = ".pipeline.lock"
DEFAULT_STALE_AFTER_SECONDS = 3600  # longer than a pod waits for a node; a dead run blocks the root this long
HEARTBEAT_SECONDS = 60
# A live run must never look stale: its heartbeat may be late by a beat, and a beat may fail once or twice.
MIN_STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
REFRESH_TRIES = 4  # a refresh that meets a storage error tries again, this often, before giving up
REFRESH_BACKOFF_SECONDS = 2.0  # ... waiting 2, 4, 8 s in between


class RootBusyError(BusyError):
    """Another run holds the root's lease; the message names it. Nothing was touched."""


class LeaseLostError(RunFailedError):
    """This run's lease was taken over (its heartbeat went stale) or is held by another run. Raised when the work
    ends, not midway: what is under the root may now be the other run's work as well as this one's."""

    def line(self, command: str | None = None) -> str:
        during = f" while `{command}` ran" if command else ""
        return (f"{self}{during}: another run took the root over, so what is there now may be that run's work as "
                "well as this one's; check `models` and the run summary")


class LeaseUnreachableError(CommandError, RuntimeError):
    """The lease could not be read or written (storage errors, retried): a fault of the moment, not of the run."""


@dataclasses.dataclass(frozen=True)
class Lease:
    run_id: str
    host: str
    since: float  # seconds since the epoch
    heartbeat: float
    pid: int | None = None  # a lease held by one process for the whole run (a local run) ends with that process
    pid_started: str | None = None  # that process's start time, so that a reused pid is not taken for it
    took_over: dict | None = None  # the stale lease this one replaced: {"run_id", "heartbeat", "why"}
    boot_id: str | None = None  # the holder's boot and pid namespace: where its pid means that process
    pid_namespace: str | None = None

    def holder(self) -> str:
        who = f"pid {self.pid} on {self.host}" if self.pid is not None else f"on {self.host}"
        return (f"run {self.run_id}, {who} since {_clock(self.since)} (last heartbeat {_clock(self.heartbeat)})")

    def process_visible(self) -> bool:
        """Whether this lease's pid names, for the caller, the process that holds it: the same host, boot and pid
        namespace, all known. Only then can the caller tell that the holder is dead. (A namespace's id is reused
        only once every process in it has ended: a match with a reused one never makes a live holder look dead.)"""
        here = _process_home()
        return (self.pid is not None and None not in here and self.host == socket.gethostname()
                and (self.boot_id, self.pid_namespace) == here)

    def stale_reason(self, now: float, stale_after: float) -> str | None:
        if self.process_visible() and not _process_alive(self.pid, self.pid_started):
            return f"its process (pid {self.pid}) no longer runs"
        if now - self.heartbeat > stale_after:
            return f"no heartbeat for {int(now - self.heartbeat)} s (limit {int(stale_after)} s)"
        return None

    def to_text(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> Lease:
        try:
            fields = json.loads(text)
            return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})
        except (ValueError, TypeError, KeyError):
            # Not a lease this code wrote (an older lock file, a torn write): it holds nothing.
            return cls(run_id="unknown", host="unknown", since=0.0, heartbeat=0.0)


def lease_path(root: str | os.PathLike) -> str:
    root = os.fspath(root)
    return posixpath.join(root, LEASE_FILE) if "://" in root else os.path.join(root, LEASE_FILE)


def read(root: str | os.PathLike) -> Lease | None:
    """The root's lease, if one is held."""
    found = _storage(lease_path(root)).read()
    return Lease.from_text(found[0]) if found else None


def acquire(root: str | os.PathLike, run_id: str, *, process: bool = False,
            stale_after: float = DEFAULT_STALE_AFTER_SECONDS) -> Lease:
    """Takes the root's lease for `run_id`, or raises RootBusyError naming its holder (LeaseUnreachableError,
    one line, when the storage cannot be read or written: a full disk, a bucket without credentials).

    Taking it again for the same run (a retried task) refreshes it. `process`:
    the calling process holds it for the whole run (a local run).
    """
    try:
        return _acquire(root, run_id, process, stale_after)
    except CommandError:  # busy, or lost: already its line
        raise
    except Exception as error:  # a full disk, a bucket without credentials or rights: nothing was taken
        raise LeaseUnreachableError(f"cannot take the lease {lease_path(root)}: {_storage_fault(error)}") from None


def _storage_fault(error: BaseException) -> str:
    """One line for a storage error, with the way out for the usual one on gs:// (no credentials)."""
    said = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = f"{type(error).__name__}: {said}" if said else type(error).__name__
    if type(error).__name__ == "DefaultCredentialsError":
        line += (" (no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a key file, or run "
                 "`gcloud auth application-default login`)")
    return line


def _acquire(root: str | os.PathLike, run_id: str, process: bool, stale_after: float) -> Lease:
    storage = _storage(lease_path(root))
    now = time.time()
    mine = Lease(run_id=run_id, host=socket.gethostname(), since=now, heartbeat=now)
    if process:
        boot_id, pid_namespace = _process_home()
        mine = dataclasses.replace(mine, pid=os.getpid(), pid_started=_process_started(os.getpid()),
                                   boot_id=boot_id, pid_namespace=pid_namespace)
    for _ in range(5):  # each pass loses only to another run changing the lease in between
        if storage.create(mine.to_text()):
            return mine
        found = storage.read()
        if found is None:
            continue  # released in between
        text, token = found
        held = Lease.from_text(text)
        if held.run_id == run_id:
            refreshed = dataclasses.replace(held, heartbeat=now)
            if storage.replace(refreshed.to_text(), token):
                return refreshed
            continue
        why = held.stale_reason(now, stale_after)
        if why is None:
            raise RootBusyError(f"another run of this pipeline is in progress ({held.holder()}); lock file "
                                f"{lease_path(root)}. Not starting a second one on the same root: nothing was changed")
        taken = dataclasses.replace(mine, took_over={"run_id": held.run_id, "heartbeat": _clock(held.heartbeat),
                                                     "why": why})
        if storage.replace(taken.to_text(), token):
            return taken
    raise RootBusyError(f"the lease {lease_path(root)} kept changing while this run tried to take it")


def refresh(root: str | os.PathLike, run_id: str, *, tries: int = REFRESH_TRIES,
            backoff: float = REFRESH_BACKOFF_SECONDS) -> Lease:
    """Renews `run_id`'s heartbeat; raises LeaseLostError if another run holds the root now, and
    LeaseUnreachableError when the storage kept failing (`tries` times, the wait doubling from `backoff`)."""
    for attempt in range(tries):
        try:
            return _refresh_once(root, run_id)
        except LeaseLostError:
            raise
        except Exception as error:  # a storage hiccup: OSError locally, google.api_core's errors on gs://
            if attempt == tries - 1:
                raise LeaseUnreachableError(f"cannot renew the lease {lease_path(root)} of run {run_id}: "
                                            f"{_storage_fault(error)} ({tries} tries)") from None
            time.sleep(backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def _refresh_once(root: str | os.PathLike, run_id: str) -> Lease:
    storage = _storage(lease_path(root))
    for _ in range(5):
        found = storage.read()
        if found is None:
            raise LeaseLostError(f"run {run_id} no longer holds {lease_path(root)}: the lease is gone")
        held = Lease.from_text(found[0])
        if held.run_id != run_id:
            raise LeaseLostError(f"run {run_id} lost the pipeline root {os.fspath(root)} to {held.holder()}")
        refreshed = dataclasses.replace(held, heartbeat=time.time())
        if storage.replace(refreshed.to_text(), found[1]):
            return refreshed
    raise LeaseLostError(f"the lease {lease_path(root)} kept changing while run {run_id} renewed it")


def release(root: str | os.PathLike, run_id: str) -> bool:
    """Removes the lease if `run_id` holds it; returns whether it did (another run's lease is left alone)."""
    storage = _storage(lease_path(root))
    found = storage.read()
    if found is None or Lease.from_text(found[0]).run_id != run_id:
        return False
    return storage.delete(found[1])


@contextlib.contextmanager
def heartbeat(root: str | os.PathLike, run_id: str, every: float | None = None):
    """Refreshes `run_id`'s lease every `every` seconds while the block runs (a Trainer runs for hours).

    A refresh that fails (the lease was taken over) is remembered and raised
    when the block ends; the work itself is not interrupted mid-write.
    """
    every = HEARTBEAT_SECONDS if every is None else every
    stop, lost = threading.Event(), []

    def beat():
        while not stop.wait(every):
            try:
                refresh(root, run_id, tries=1)
            except LeaseLostError as error:
                lost.append(error)
                return
            except LeaseUnreachableError:  # storage hiccup: the next beat tries again, well within the stale limit
                continue

    thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
    if lost:
        raise lost[0]


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _process_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), if readable. None where
    /proc numbers processes as another pid namespace does (a namespace made without its own /proc mount)."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return None
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_home() -> tuple[str | None, str | None]:
    """(this boot's id, this process's pid namespace, as "pid:[inode]"), each None where unreadable (not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot_id = f.read().strip() or None
    except OSError:
        boot_id = None
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return boot_id, namespace


def _process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _process_started(pid) in (None, started)


def _storage(path: str) -> lease_storage.LocalFile | lease_storage.GcsObject:
    return lease_storage.GcsObject(path) if path.startswith("gs://") else lease_storage.LocalFile(path)
