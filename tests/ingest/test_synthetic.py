"""The generated sets: the demo's cartoon look and the dim, grey, grainy 'dusk' look."""

import io

import numpy as np
import pytest
from PIL import Image

from ingest import synthetic


def _pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)


def test_dusk_is_darker_and_greyer_than_the_cartoon_look_of_the_same_scene():
    for class_name in ("cat", "dog"):
        for index in range(4):
            cartoon = _pixels(synthetic.render_image(class_name, index))
            dusk = _pixels(synthetic.render_image(class_name, index, look="dusk"))
            assert cartoon.shape == dusk.shape  # the same scene
            assert dusk.mean() < 0.75 * cartoon.mean()
            saturation = lambda p: (p.max(axis=2) - p.min(axis=2)).mean()  # noqa: E731
            assert saturation(dusk) < 0.7 * saturation(cartoon)
    again = synthetic.render_image("dog", 3, look="dusk")
    assert again == synthetic.render_image("dog", 3, look="dusk")  # deterministic like the demo's


def test_an_unknown_look_is_refused():
    with pytest.raises(ValueError, match="look must be one of"):
        synthetic.render_image("cat", 0, look="noir")


def test_each_look_draws_the_same_image_for_the_same_index_and_seed_and_another_for_another():
    for look in synthetic.LOOKS:
        image = synthetic.render_image("cat", 7, seed=1, look=look)
        assert image == synthetic.render_image("cat", 7, seed=1, look=look)
        assert image != synthetic.render_image("cat", 8, seed=1, look=look)
        assert image != synthetic.render_image("cat", 7, seed=2, look=look)


def test_the_looks_differ_in_style_colour_and_pose():
    def saturation(p):
        return (p.max(axis=2) - p.min(axis=2)).mean()

    for class_name in ("cat", "dog"):
        for index in range(3):
            images = {look: _pixels(synthetic.render_image(class_name, index, look=look)) for look in synthetic.LOOKS}
            assert saturation(images["sketch"]) < 1  # grey lines on paper: no fur colour left
            assert images["sketch"].mean() > images["cartoon"].mean()  # mostly paper
            hue_turned = np.abs(images["recolour"] - images["cartoon"]).mean()
            assert hue_turned > 10  # the same scene in other colours
            assert len({synthetic.render_image(class_name, index, look=look) for look in synthetic.LOOKS}) == 7
