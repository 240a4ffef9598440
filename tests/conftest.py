"""Shared fixtures: small generated images, never downloaded. And pytest's exit status kept as pytest's."""

import atexit
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from contract import features
from ingest import synthetic

_SESSION = pytest.StashKey[pytest.Session]()
_exit_status: list[int] = []


@pytest.fixture(scope="session")
def demo_jpegs():
    """{class_name: [jpeg bytes, ...]} with 3 images per class."""
    return {name: [synthetic.render_image(name, i) for i in range(3)] for name in features.LABEL_NAMES}


def pytest_sessionstart(session):
    session.config.stash[_SESSION] = session


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
