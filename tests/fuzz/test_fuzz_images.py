"""The image check of ingest and predict, over random and mutated files: every input is accepted (a JPEG that
TensorFlow decodes to the size it states) or rejected with a one-line reason; nothing else escapes. Over images
whose headers disagree, the pixel limit holds for the largest size any of them gives."""

import re

import tensorflow as tf
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ingest.images import RejectedImage, check_image, check_images
from tests.fuzz.conftest import examples
from tests.fuzz.mismatches import mismatched
from tests.fuzz.mutations import mutated
from tests.fuzz.seeds import image_seeds

SEEDS = image_seeds()


@settings(max_examples=examples(400))
@given(mutated(SEEDS))
def test_any_file_is_accepted_as_a_decodable_jpeg_or_rejected_with_a_reason(data):
    try:
        image = check_image(data, max_pixels=2_000_000)
    except RejectedImage as rejection:
        assert rejection.reason and "\n" not in rejection.reason, rejection.reason
        # --hypothesis-show-statistics counts the outcomes (sizes left out, so that they group)
        event("rejected: " + re.sub(r"\d+x\d+ pixels", "WxH pixels", rejection.reason.split(" (")[0]))
        return
    event("accepted" if image.normalized is None else "normalized")
    decoded = tf.io.decode_jpeg(image.jpeg, channels=3)
    assert tuple(decoded.shape) == (image.height, image.width, 3)
    assert image.height * image.width <= 2_000_000


def _verdict(data: bytes):
    try:
        return check_image(data, max_pixels=2_000_000)
    except RejectedImage as rejection:
        return rejection.reason


@settings(max_examples=examples(60))
@given(st.lists(mutated(SEEDS), min_size=2, max_size=6))
def test_a_batch_of_any_files_gets_the_verdicts_each_file_gets_alone(batch):
    """ingest checks its items in batches, decoded in one call: whatever the batch holds, each file's verdict is
    the one check_image gives it."""
    verdicts = check_images(batch, max_pixels=2_000_000)
    assert [v.reason if isinstance(v, RejectedImage) else v for v in verdicts] == [_verdict(d) for d in batch]


def test_every_seed_is_accepted():
    """The mutations start from valid files, so what they find is the decoders' edges, not the seeds'."""
    assert all(check_image(seed).width == 40 or check_image(seed).width == 32 for seed in SEEDS)


LIMIT = 1_000_000  # below the mismatches' largest sizes, so that both sides of it are drawn


@settings(max_examples=examples(60))
@given(mismatched())
def test_an_image_whose_headers_disagree_is_rejected_by_its_largest_size_before_any_decoder_runs(case):
    data, pixels = case
    try:
        image = check_image(data, max_pixels=LIMIT)
    except RejectedImage as rejection:
        if pixels > LIMIT:  # refused for its size, not by a decoder that first allocated it
            assert f"exceeds the limit of {LIMIT}" in rejection.reason, rejection.reason
        event("above the limit: rejected" if pixels > LIMIT else "within the limit: rejected")
        return
    event("within the limit: accepted")
    assert pixels <= LIMIT and image.width * image.height <= LIMIT
