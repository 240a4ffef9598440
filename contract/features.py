"""The data contract: feature keys of the ingested tf.Examples and label names.

Ingest writes these keys, the curated schema declares them, Transform and the
serving signatures read them. Label value i means LABEL_NAMES[i].
"""

LABEL_NAMES = ("cat", "dog")
# The labels as TFDV's statistics of the categorical label spell them.
LABEL_VALUES = tuple(str(index) for index in range(len(LABEL_NAMES)))
# The label whose probability the model outputs (PROBABILITY_OUTPUT): a logit >= 0 means this one.
POSITIVE_LABEL = LABEL_NAMES[1]

# Raw tf.Example features, as written by ingest.
IMAGE_KEY = "image"  # JPEG bytes
LABEL_KEY = "label"  # int64, index into LABEL_NAMES
HEIGHT_KEY = "height"  # int64, pixels of the source image
WIDTH_KEY = "width"  # int64
SOURCE_KEY = "source"  # bytes, path of the source file relative to the data root
SHA256_KEY = "image_sha256"  # bytes, hex digest of the image bytes

# Features produced by preprocessing_fn.
PIXELS_KEY = "pixels"  # uint8 values (stored as int64) of shape [size, size, 3]

# The serving signatures' names and inputs.
SERVING_SIGNATURE = "serving_default"  # encoded images in
EXAMPLES_SIGNATURE = "serving_examples"  # serialized tf.Examples in: what TFMA (the Evaluator) feeds
IMAGE_INPUT = "image_bytes"  # a batch of encoded images (JPEG, PNG, GIF or BMP bytes)

# Outputs of the serving signatures.
PROBABILITY_OUTPUT = "dog_probability"  # NaN where the image could not be decoded
CLASS_OUTPUT = "class_name"  # "" where the image could not be decoded
# serving_default only: one bad image in a batch does not fail the others.
VALID_OUTPUT = "valid"  # bool: the image was decoded and classified
ERROR_OUTPUT = "error"  # "" or why the image was not classified


def named_slice(slice_name: str) -> str:
    """An evaluation slice of the label with its class's name: 'label=1' -> 'label=1 (dog)'; any other as it is."""
    key, _, value = slice_name.partition("=")
    if key == LABEL_KEY and value in LABEL_VALUES:  # ASCII digits only: '²'.isdigit() holds and int('²') raises
        return f"{slice_name} ({LABEL_NAMES[int(value)]})"
    return slice_name
