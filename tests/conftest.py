"""Shared fixtures: small generated images, never downloaded."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from contract import features
from ingest import synthetic


@pytest.fixture(scope="session")
def demo_jpegs():
    """{class_name: [jpeg bytes, ...]} with 3 images per class."""
    return {name: [synthetic.render_image(name, i) for i in range(3)] for name in features.LABEL_NAMES}


# The files that each hold one long scenario (one module-scoped fixture: many pipeline runs), longest first, then
# every other file in collection order. With `--dist=loadfile` a worker takes a whole file; a long file handed out
# last keeps one worker busy while the other has nothing left (xdist's own reordering, by the number of tests in a
# file, does exactly that, so `make test` turns it off). docs/tests.md has their times.
LONGEST_FIRST = ("e2e/test_kubeflow_local.py", "e2e/test_retraining.py", "faults/test_run_faults.py",
                 "benchmarks/test_suite_smoke.py", "trainer/test_pretrained.py", "e2e/test_local_pipeline.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith("/tests/" + name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: each file's tests keep their order
