"""Shared fixtures: small generated images, never downloaded. And pytest's exit status kept as pytest's."""

import atexit
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from contract import features, startup
from ingest import synthetic

_SESSION = pytest.StashKey[pytest.Session]()
_exit_status: list[int] = []


@pytest.fixture(scope="session")
def demo_jpegs():
    """{class_name: [jpeg bytes, ...]} with 3 images per class."""
    return {name: [synthetic.render_image(name, i) for i in range(3)] for name in features.LABEL_NAMES}


def pytest_sessionstart(session):
    session.config.stash[_SESSION] = session


# The files that take longest, slowest first (`tests.cpu_table` on a clean-clone run: docs/tests.md). The workers
# take files in collection order (`--no-loadscope-reorder`: xdist's own order puts files with few tests last, and
# the smoke benchmark's one test of four minutes then ran alone at the end); a long file started last is the
# suite's tail, so these start first, the other files that run whole pipelines next, then the rest, most tests
# first, which fill in the gaps.
SLOWEST_FILES = (
    "tests/e2e/test_kubeflow_local.py",
    "tests/e2e/test_retraining.py",
    "tests/faults/test_run_faults.py",
    "tests/e2e/test_local_pipeline.py",
    "tests/benchmarks/test_suite_smoke.py",
    "tests/trainer/test_pretrained.py",
)


def collection_order(items) -> list:
    """`items` with each file's tests together, in its own order: SLOWEST_FILES, then the files with a test marked
    e2e, then the others; most tests first within each group."""
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.location[0], []).append(item)

    def rank(path):
        tests = files[path]
        if path in SLOWEST_FILES:
            return (0, SLOWEST_FILES.index(path))
        return (1 if any(item.get_closest_marker("e2e") for item in tests) else 2, -len(tests))

    return [item for path in sorted(files, key=rank) for item in files[path]]


def pytest_collection_modifyitems(config, items):
    items[:] = collection_order(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    """The test modules import TensorFlow, TFX and Beam: loaded as a command loads them (contract.startup), so each
    worker's later collector passes do not walk the libraries' million objects again."""
    with startup.loading_libraries():
        yield


# TEST_CPU_LOG=FILE: each test file's wall and CPU seconds (this process's and every child's it waited for: the CLI
# runs, kfp's task processes) are appended to FILE as JSON lines, one per file and worker; `python -m tests.cpu_table
# FILE` prints them (docs/tests.md). A relative FILE is the caller's: the tests that run pytest again run it elsewhere.
_CPU_LOG = os.environ.get("TEST_CPU_LOG") and os.path.abspath(os.environ["TEST_CPU_LOG"])
_cpu_by_file: dict[str, list[float]] = {}


def _cpu_seconds() -> tuple[float, float]:
    import resource
    import time

    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _CPU_LOG:
        yield
        return
    wall, cpu = _cpu_seconds()
    yield
    wall_after, cpu_after = _cpu_seconds()
    spent = _cpu_by_file.setdefault(item.location[0], [0.0, 0.0, 0])
    spent[0] += wall_after - wall
    spent[1] += cpu_after - cpu
    spent[2] += 1


def pytest_sessionfinish(session):
    if _CPU_LOG and _cpu_by_file:
        import json

        with open(_CPU_LOG, "a") as log:
            for path, (wall, cpu, tests) in _cpu_by_file.items():
                row = {"file": path, "wall": round(wall, 1), "cpu": round(cpu, 1), "tests": tests}
                log.write(json.dumps(row) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    session = config.stash.get(_SESSION, None)
    if session is not None and not hasattr(config, "workerinput"):  # an xdist worker's status is its controller's
        _exit_status[:] = [int(session.exitstatus)]


def _exit_with_pytests_status():
    """protobuf 4.25's C extension can crash while the interpreter tears its modules down after TensorFlow
    Transform ran on Beam (PyUpb_RepeatedContainer_Dealloc): exit 139 whether the tests passed or failed. So
    once pytest is done (its reports written, its clean-ups and the exit handlers registered after this module
    run: these run last in first out), the process ends with pytest's own status, before that teardown."""
    if _exit_status:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])


atexit.register(_exit_with_pytests_status)
