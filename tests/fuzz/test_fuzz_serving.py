"""The serving signature, over batches of random and mutated images: every image gets an answer (valid with a
probability, or not valid with its error) and the rest of its batch is classified; the request never fails.
Over images whose headers disagree (a GIF's frames larger than its screen, a JPEG's second frame header, lying
PNG and BMP headers), none is decoded above the pixel limit."""

import math

import pytest
import tensorflow as tf
from hypothesis import event, given, settings
from hypothesis import strategies as st

from config import TrainingConfig
from contract import features
from tests.fuzz.conftest import examples
from tests.fuzz.mismatches import mismatched
from tests.fuzz.mutations import mutated
from tests.fuzz.seeds import image_seeds
from tests.helpers import CHEAP_BASE, transform_graph
from trainer import export
from trainer import model as model_lib

# TensorFlow 2.16 decodes JPEG, PNG, GIF and BMP (WebP is ingest's: it becomes JPEG there)
SEEDS = [seed for seed in image_seeds() if not seed.startswith(b"RIFF")]
LIMIT = 1_000_000  # small, so that a mutated header's size is soon above it


@pytest.fixture(scope="module")
def serve(tmp_path_factory, demo_jpegs):
    classifier = model_lib.get_classifier(
        model_lib.build_model(TrainingConfig(weights="none", alpha=0.35, **CHEAP_BASE, seed=1), 32))
    path = str(tmp_path_factory.mktemp("serving") / "model")
    export.export_serving_model(classifier, transform_graph(tmp_path_factory.mktemp("transform"), demo_jpegs, 32),
                                path, max_pixels=LIMIT)
    return tf.saved_model.load(path).signatures[features.SERVING_SIGNATURE]


@settings(max_examples=examples(150))
@given(batch=st.lists(mutated(SEEDS), min_size=1, max_size=4))
def test_every_image_of_any_batch_gets_an_answer(serve, batch):
    result = {name: value.numpy().tolist() for name, value in serve(image_bytes=tf.constant(batch)).items()}
    assert all(len(values) == len(batch) for values in result.values())
    for probability, valid, error, name in zip(result[features.PROBABILITY_OUTPUT], result[features.VALID_OUTPUT],
                                               result[features.ERROR_OUTPUT], result[features.CLASS_OUTPUT]):
        if valid:
            assert 0.0 <= probability <= 1.0 and error == b"" and name in (b"cat", b"dog")
            event("classified")
        else:
            assert math.isnan(probability) and name == b""
            assert error.startswith((b"not a decodable image", f"more than {LIMIT} pixels".encode())), error
            event(error.decode().split(" (")[0].split(",")[0])


@settings(max_examples=examples(40))
@given(case=mismatched())
def test_an_image_whose_headers_disagree_is_never_decoded_above_the_limit(serve, case):
    data, pixels = case
    result = serve(image_bytes=tf.constant([data]))
    valid, error = bool(result[features.VALID_OUTPUT][0]), result[features.ERROR_OUTPUT][0].numpy().decode()
    if valid:
        assert pixels <= LIMIT
        event("within the limit: classified")
    elif pixels > LIMIT and not data.startswith(b"\xff\xd8"):
        # libjpeg refuses a second frame header before it allocates; other decoders allocate what they read
        assert error.startswith(f"more than {LIMIT} pixels"), error
        event("above the limit: refused by its size")
    else:
        event(f"{'above' if pixels > LIMIT else 'within'} the limit: not decodable")
