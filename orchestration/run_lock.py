"""One run per pipeline root at a time, for the commands that run on this machine.

Two runs on one root would race on its spans and versions, and two
LocalDagRunner runs on one SQLite metadata store fail with "database is
locked". A second run (an overlapping cron job, a rollback during a run, a
Kubeflow run on the same root) must exit at once without touching anything.
The lock is the root's lease (orchestration/lease.py), the same one the
Kubeflow tasks take, held by this process: a run that is killed leaves a
lease the next run on this machine takes over at once when it runs in the same
pid namespace (else when the lease's heartbeat is stale).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

from orchestration import lease


@contextlib.contextmanager
def exclusive_run(output_dir: str | os.PathLike, run_id: str | None = None):
    """Holds `<output_dir>/.pipeline.lock` while the block runs; raises lease.RootBusyError if another run holds it."""
    run_id = run_id or f"local-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    held = lease.acquire(output_dir, run_id, process=True)
    try:
        with lease.heartbeat(output_dir, run_id):
            yield held
    finally:
        lease.release(output_dir, run_id)
