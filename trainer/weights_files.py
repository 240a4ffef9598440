"""What a Keras HDF5 weights file of MobileNetV2's base holds, read from the layer names it lists, without Keras.

Keras' ImageNet no-top files and the files `base-weights` writes (trainer.model.save_base_weights) list their layers
by name. A file written from a base kept to fewer blocks (--base-blocks) lists only the layers up to its last block:
it loads by name into a base cut as short or shorter, and no other. The command line checks this before a run
starts (cli.local_run.check_local_files) and the Trainer again as it builds the base.
"""

from __future__ import annotations

import re

from config import MOBILENET_V2_BLOCKS, base_description

LAST_CONV_NAME = "Conv_1"  # the whole base's 1x1 convolution after block_16, which a shorter base lacks
_FIRST_LAYERS = ("Conv1", "expanded_conv_project")  # the stem's convolution and the first block's last one
_BLOCK = re.compile(r"^block_(\d+)_")


class WeightsFileError(ValueError):
    """No base of the configured blocks can load the file; the message names the file and why."""


def layer_names(path: str) -> list[str] | None:
    """The layer names a Keras HDF5 weights file of the legacy layout lists; None for a file of another format
    (Keras 3's .weights.h5, not HDF5 at all), which Keras' own loader then judges."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = f.attrs.get("layer_names")
    except (OSError, ValueError):
        return None
    return None if names is None else [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def blocks_held(path: str, names: list[str]) -> int:
    """MOBILENET_V2_BLOCKS for a whole base's file, N for one of a base kept up to block_N."""
    missing = [name for name in _FIRST_LAYERS if name not in names]
    if missing:
        raise WeightsFileError(f"weights file {path!r} is not of MobileNetV2's base: it has no layer {missing[0]}")
    if LAST_CONV_NAME in names:
        return MOBILENET_V2_BLOCKS
    return max((int(match.group(1)) for match in map(_BLOCK.match, names) if match), default=0)


def shorter_base_file(path: str, base_blocks: int) -> bool:
    """Whether `path` is a shorter base's file, which a base of `base_blocks` loads by name; False when the whole
    base loads it (or Keras judges its format). Raises WeightsFileError when no base of `base_blocks` can load it."""
    names = layer_names(path)
    if names is None:
        return False
    held = blocks_held(path, names)
    if held == MOBILENET_V2_BLOCKS:
        return False
    if base_blocks > held:
        raise WeightsFileError(
            f"weights file {path!r} holds {base_description(held)} (a model trained with --base-blocks {held}): "
            f"it loads with --base-blocks {held} or fewer, not {base_blocks}")
    return True


# Where Keras fetches MobileNetV2's ImageNet files, and the input sides it has one for (another side loads 224's).
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_IMAGENET_SIDES = (96, 128, 160, 192, 224)
DOWNLOAD_TIMEOUT_SECONDS = 30  # per connection attempt and read: a network that drops packets fails, never hangs


def imagenet_file_name(alpha: float, image_size: int) -> str:
    """The no-top ImageNet file Keras' MobileNetV2 loads for this width and input side (its own naming)."""
    side = image_size if image_size in _IMAGENET_SIDES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{side}_no_top.h5"


KERAS_CACHE_DIR = None  # None: Keras' own ($KERAS_HOME, else ~/.keras), where its MobileNetV2 looks


def fetch_imagenet_file(alpha: float, image_size: int) -> str:
    """The ImageNet file in Keras' cache, downloaded now if it is not there yet (where and as Keras' MobileNetV2
    fetches it, so the Trainer finds it there): a run on new data without network stops here, after its ingest and
    before its first component, rather than at its Trainer. OSError naming the file and why when it cannot be had."""
    import socket

    from keras.utils import get_file

    name, base_url = imagenet_file_name(alpha, image_size), IMAGENET_BASE_URL
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        path = get_file(name, base_url + name, cache_subdir="models", cache_dir=KERAS_CACHE_DIR)
    except Exception as error:  # Keras wraps the download's failure in several types
        raise OSError(f"MobileNetV2's ImageNet weights ({name}) could not be downloaded from {base_url}: "
                      f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}") from None
    finally:
        socket.setdefaulttimeout(previous)
    import h5py

    try:  # Keras checks no hash of these files: a download cut short stays in its cache
        with h5py.File(path, "r"):
            return path
    except OSError:
        raise OSError(f"Keras' cache holds {path}, which is no whole HDF5 file (a download cut short?): delete it, "
                      "and the next run downloads it again") from None
