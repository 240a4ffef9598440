"""One run per pipeline root at a time, for the commands that run on this machine.

Two runs on one root would race on its spans and versions, and two
LocalDagRunner runs on one SQLite metadata store fail with "database is
locked". A second run (an overlapping cron job, a rollback during a run, a
Kubeflow run on the same root) must exit at once without touching anything.
The lock is the root's lease (orchestration/root/lease.py), the same one the
Kubeflow tasks take, held by this process: a run that is killed leaves a
lease the next run on this machine takes over at once when it runs in the same
pid namespace (else when the lease's heartbeat is stale).

A folder that is not a pipeline root (orchestration.root.marker) is refused before
the lease is taken, so no lock file is ever written into a folder of the
user's; a command refused while it held the lease (exit 2 or 3) leaves the
folder's top level as it found it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid

from contract import layout
from contract.errors import BUSY, REFUSED, CommandError
from orchestration.root import lease, marker


@contextlib.contextmanager
def exclusive_run(output_dir: str | os.PathLike, run_id: str | None = None, *, claim: bool = False):
    """Holds `<output_dir>/.pipeline.lock` while the block runs; raises marker.NotARootError (nothing written) if
    the folder is not a pipeline root, lease.RootBusyError if another run holds it. `claim`: the folder becomes
    a root (its marker written) once the lease is held. Yields a Held."""
    linked = linked_parts(output_dir)
    if linked:
        raise LinkedPartError(f"{output_dir} cannot be used: {'; '.join(linked)}; make it a folder of the root")
    found = marker.inspect(output_dir)
    run_id = run_id or f"local-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    held = lease.acquire(output_dir, run_id, process=True)
    refused = False
    try:
        note = marker.claim(output_dir, found) if claim else None
        with lease.heartbeat(output_dir, run_id):
            yield Held(held, note)
    except CommandError as error:
        refused = error.exit_code in (REFUSED, BUSY)
        if refused:
            marker.restore(output_dir, found)
        raise
    finally:
        lease.release(output_dir, run_id)
        if refused:
            marker.restore_after_release(output_dir, found)


_ASIDE_SUFFIX = ".incomplete"  # contract.storage.ASIDE_SUFFIX, without importing TensorFlow before a refusal


def linked_parts(root: str | os.PathLike) -> list[str]:
    """The pipeline's own places directly under a local `root` (spans, versions, the store, the artifacts, the
    reports, where incomplete ones are moved, the traffic, drift reports and labeling queues) that are symbolic
    links, one line each: writing through one would write, move and delete outside the root. The root itself may
    be a link: the user chose where it is."""
    if "://" in os.fspath(root):
        return []  # an object store has no links
    where = layout.RunLayout(os.fspath(root))
    parts = [where.examples_root, where.serving_dir, where.pipeline_root, where.metadata_path, where.report_dir,
             where.runs_dir, where.summary_path, os.path.dirname(where.schema_path),
             where.examples_root + _ASIDE_SUFFIX, where.serving_dir + _ASIDE_SUFFIX,
             where.traffic_root, where.monitoring_dir, where.labeling_root]
    return [f"{part} is a symbolic link (to {os.readlink(part)}), and links are never followed"
            for part in parts if os.path.islink(part)]


class LinkedPartError(CommandError):
    """A place of the root the pipeline writes is a symbolic link out of it; nothing was touched."""


@dataclasses.dataclass(frozen=True)
class Held:
    """What exclusive_run yields: the lease the run holds, and a note when it adopted an earlier version's root."""

    lease: lease.Lease
    adopted: str | None = None
