"""`predict --model FILE.tflite`: a pushed version's TFLite classifier on your own photos, as a device runs it.

The TFLite files take pixels, not image bytes: each photo is decoded and resized exactly as the model's training
images were (trainer.preprocessing, docs/pipeline.md), then given to LiteRT's interpreter one image at a time, and
its logit read as the SavedModel reads its own (a probability of 0.5 or more is a dog).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from contract import features
from contract.errors import first_line, shown_name
from inference.predict import NoModelError
from ingest import sources

SUFFIX = ".tflite"
# A classifier for a device is a few MB (MobileNetV2 at alpha 1.0 in float32, the largest this pipeline would write,
# about 9 MB): a file many times that is no such model, and is not read whole to find out.
MAX_MODEL_BYTES = 256 << 20


def is_tflite(path: str | os.PathLike) -> bool:
    return pathlib.Path(path).suffix.lower() == SUFFIX


def load_tflite(path: str | os.PathLike):
    """A classifier of the TFLite file at `path` ([image bytes] -> {output: values}, predict_files' `serve`);
    NoModelError, in one line naming the file, for one that cannot be read or is no classifier of this pipeline."""
    from trainer import tflite

    shown = shown_name(str(path))
    try:
        flatbuffer = sources.read_bytes(str(path), MAX_MODEL_BYTES)
    except sources.FileTooLarge as refused:
        raise NoModelError(f"--model {shown}: {refused.size} bytes, more than the {MAX_MODEL_BYTES >> 20} MiB a "
                           "TFLite classifier of this pipeline could take: not read") from None
    except sources.NotRegularFile as refused:
        raise NoModelError(f"--model {shown}: {refused}") from None
    except OSError as error:
        raise NoModelError(f"--model {shown} cannot be read: {error.strerror or first_line(error)}") from None
    if not flatbuffer:
        raise NoModelError(f"--model {shown} is empty (0 bytes): not a TFLite model")
    changed = _changed_since_push(pathlib.Path(path), flatbuffer)
    if changed:
        raise NoModelError(f"--model {shown} {changed}")
    try:
        classifier = tflite.Classifier(flatbuffer)
    except ValueError as error:
        raise NoModelError(f"--model {shown} is not a TFLite classifier this command can run: {error}") from None
    return lambda images: _classified(classifier, images)


def _changed_since_push(path: pathlib.Path, flatbuffer: bytes) -> str | None:
    """Why a TFLite file of a pushed version (<version>/assets.extra/, found through any link) is not the one
    pushed: its bytes against the digest the version's commit record holds for it. None for a file elsewhere, or
    one the record does not name."""
    import hashlib

    from contract import layout, served

    real = path.resolve()
    if real.parent.name != layout.ASSETS_EXTRA:
        return None
    version = real.parent.parent
    if not (version / "saved_model.pb").exists():  # an assets.extra/ of no pushed version: a file kept elsewhere
        return None
    recorded = served.recorded_digests(str(version))
    if recorded is None and os.path.lexists(version / layout.DIGESTS_FILE):
        return (f"is a file of version {shown_name(str(version))}, whose commit record "
                f"({layout.DIGESTS_FILE}) cannot be read: its files cannot be checked against the push")
    digest = (recorded or {}).get(f"{layout.ASSETS_EXTRA}/{real.name}")
    if digest is None or hashlib.sha256(flatbuffer).hexdigest() == digest:
        return None
    return (f"is not the file that was pushed: its bytes differ from its digest in "
            f"{shown_name(str(real.parent.parent / layout.DIGESTS_FILE))}")


def _classified(classifier, images: list[bytes]) -> dict:
    """Each image decoded on its own, as the SavedModel's image signature does, so that one the decoder refuses is
    reported alone and the others are still classified."""
    import tensorflow as tf

    from trainer import preprocessing

    logits, refusals = [], []
    for image in images:
        try:
            pixels = preprocessing.decode_and_resize(tf.constant([image]), classifier.image_size).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as error:
            logits.append(np.nan)
            refusals.append(f"the decoder refused it: {first_line(error)}")
            continue
        logits.append(float(classifier.logits(pixels.astype(np.float32))[0]))
        refusals.append("")
    # 1 / (1 + e^-x) without e^-x overflowing for a large negative logit
    probability = 0.5 * (1 + np.tanh(np.asarray(logits, np.float64) / 2))
    return {features.PROBABILITY_OUTPUT: probability,
            features.CLASS_OUTPUT: ["" if why else features.LABEL_NAMES[int(p >= 0.5)]
                                    for p, why in zip(probability, refusals, strict=True)],
            features.VALID_OUTPUT: [not why for why in refusals], features.ERROR_OUTPUT: refusals}
