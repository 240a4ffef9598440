"""A drift check's record in ML Metadata, and a store that does not take it."""

import os
import subprocess
import sys

from monitoring import record
from tests.helpers import ROOT, file_size_limited

# The record written where the disk is full (a file size limit at the store's size; SIGXFSZ ignored, so a write
# past it fails as on a full disk): in a process of its own, as the limit is the process's.
FULL = """
import resource, signal, sys
from contract import errors
from monitoring import record
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
try:
    record.record_check(sys.argv[1], "monitoring/check-2", None, {record.TESTS: [{"name": "score"}] * 400})
except record.RecordError as error:
    print(error.exit_code, error.line())
"""


def test_a_store_that_refuses_the_record_ends_the_check_in_one_short_line_naming_the_report(tmp_path):
    """ml_metadata's error quotes the whole record (kilobytes in its one line); the line names the store and where
    the report is, and the store keeps the checks it held."""
    store = str(tmp_path / "metadata.sqlite")
    record.record_check(store, "monitoring/check-1", None, {record.DRIFT: True})
    result = subprocess.run([sys.executable, "-c", FULL, store, str(os.path.getsize(store))], capture_output=True,
                            text=True, cwd=ROOT, env=file_size_limited({**os.environ, "PYTHONPATH": str(ROOT)}),
                            timeout=120)
    code, line = result.stdout.rstrip("\n").split(" ", 1)
    assert code == "1" and "\n" not in line and len(line) < 500, result.stdout + result.stderr
    assert f"recorded in the ML Metadata store {store}" in line and "its report is monitoring/check-2" in line
    assert [check["uri"] for check in record.checks(store)] == ["monitoring/check-1"]
