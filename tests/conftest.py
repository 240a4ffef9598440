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
