"""The image check of ingest and predict, over random and mutated files: every input is accepted (a JPEG that
TensorFlow decodes to the size it states) or rejected with a one-line reason; nothing else escapes."""

import re

import tensorflow as tf
from hypothesis import event, given, settings

from ingest.images import RejectedImage, check_image
from tests.fuzz.conftest import examples
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


def test_every_seed_is_accepted():
    """The mutations start from valid files, so what they find is the decoders' edges, not the seeds'."""
    assert all(check_image(seed).width == 40 or check_image(seed).width == 32 for seed in SEEDS)
