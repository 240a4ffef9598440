"""What monitor measures of images: their sizes, their colour, and the served model's score and pooled features.

Sizes come from the files' headers (every image of a window, cheaply); colour, score and features from one
pass of the classifier over the pixels it sees (decoded and resized as serving does), so they are measured on
a sample of the window. The pooled features are what MobileNetV2's base gives the head: a picture of what the
model sees, which moves when the images move even where the score does not.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from typing import Iterable

import numpy as np

HEIGHT, WIDTH, BRIGHTNESS, SATURATION, SCORE, FEATURES = (
    "height", "width", "brightness", "saturation", "score", "features")
SIZES = (HEIGHT, WIDTH)
SEEN = (BRIGHTNESS, SATURATION, SCORE, FEATURES)  # measured by the classifier's pass
VECTORS = frozenset({FEATURES})
BATCH = 64


@dataclasses.dataclass
class Measured:
    """Each quantity's values for the images measured ({name: array}); `unreadable`: what could not be."""

    values: dict[str, np.ndarray]
    unreadable: list[str] = dataclasses.field(default_factory=list)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the image's header, as ingest would store them (EXIF orientation applied); None
    when Pillow cannot read the header."""
    from PIL import Image, UnidentifiedImageError

    from ingest.images import ACCEPTED_FORMATS

    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # a quarter turn: ingest stores it upright
                width, height = height, width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return height, width


def sizes(images: list[bytes]) -> Measured:
    found = [image_size(data) for data in images]
    kept = [size for size in found if size]
    unreadable = [f"image {index}: no readable header" for index, size in enumerate(found) if size is None]
    array = np.array(kept, float).reshape(-1, 2)
    return Measured({HEIGHT: array[:, 0], WIDTH: array[:, 1]}, unreadable)


def sample(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `limit` of `count` items drawn at random (all of them when there are no more)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def checked(images: list[bytes], numbers=None) -> tuple[list[bytes], list[str]]:
    """The images as ingest would store them (RGB JPEG), and a line for each one ingest would refuse, naming it
    by its number in `numbers` (default: its position)."""
    from ingest.images import RejectedImage, check_image

    kept, refused = [], []
    for index, data in enumerate(images):
        try:
            kept.append(check_image(data).jpeg)
        except RejectedImage as rejection:
            refused.append(f"image {index if numbers is None else numbers[index]}: {rejection.reason}")
    return kept, refused


class Embedder:
    """The classifier rewired to give, for each image, its pooled base features and its dog probability."""

    def __init__(self, classifier):
        import keras
        import tensorflow as tf

        from trainer import model as model_lib

        inputs = keras.Input(shape=classifier.input_shape[1:])
        features = model_lib.get_base(classifier)(classifier.get_layer(model_lib.RESCALE_NAME)(inputs),
                                                  training=False)
        head = model_lib.head_layers(classifier)
        pooled = head[0](features)
        logits = pooled
        for layer in head[1:]:
            logits = layer(logits, training=False)
        self.image_size = int(classifier.input_shape[1])
        rewired = keras.Model(inputs, [pooled, logits])
        self._call = tf.function(lambda pixels: rewired(pixels, training=False), reduce_retracing=True)

    @classmethod
    def load(cls, keras_path: str) -> "Embedder":
        import keras

        return cls(keras.models.load_model(keras_path, compile=False))

    def measure(self, jpegs: Iterable[bytes]) -> Measured:
        """Brightness, saturation (both 0-1, mean over the pixels), score and pooled features of each image, taken
        BATCH at a time from `jpegs` (a generator's images are never all held)."""
        import tensorflow as tf

        from trainer import preprocessing

        parts: dict[str, list[np.ndarray]] = {name: [] for name in SEEN}
        given = iter(jpegs)
        while batch := list(itertools.islice(given, BATCH)):
            pixels = preprocessing.decode_and_resize(tf.constant(batch), self.image_size)
            pooled, logits = self._call(tf.cast(pixels, tf.float32))
            colour = pixels.numpy().astype(np.float32) / 255.0
            brightest, darkest = colour.max(axis=-1), colour.min(axis=-1)
            parts[BRIGHTNESS].append(colour.mean(axis=(1, 2, 3)))
            parts[SATURATION].append(((brightest - darkest) / np.maximum(brightest, 1e-6)).mean(axis=(1, 2)))
            parts[SCORE].append(tf.sigmoid(tf.reshape(logits, [-1])).numpy())
            parts[FEATURES].append(pooled.numpy())
        if not parts[SCORE]:
            return Measured({name: np.zeros((0,)) for name in SEEN})
        return Measured({name: np.concatenate(values) for name, values in parts.items()})
