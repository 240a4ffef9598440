"""The one typed, validated configuration of the pipeline.

Every value that a user may tune lives here exactly once. The CLI builds its
flags from these fields (their `help` metadata is the flag's help), the
pipeline passes the relevant sections to Transform and Trainer as
`custom_config`, and the tests read the defaults from here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from config import mobilenet_v2
from contract.errors import CommandError
from contract.settings import setting

# MobileNetV2's widths in use run from 0.35 to 1.4; at 10 its base has about 200 million weights, and far wider ones
# overflow the rounding of its channels (config.mobilenet_v2).
MAX_ALPHA = 10.0
# MobileNetV2's ImageNet weights exist for these width multipliers only.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"
# Layers of Keras' MobileNetV2 without its top at widths from about 0.28 up (any input size; config.mobilenet_v2
# counts them at any width); phase 2 unfreezes from an index below this.
MOBILENET_V2_BASE_LAYERS = mobilenet_v2.base_layers(1.0)
MOBILENET_V2_BLOCKS = len(mobilenet_v2.BLOCKS) - 1  # Keras' block_1 to block_16, after its first, expanded_conv


def base_description(base_blocks: int) -> str:
    """How a message names the base of `base_blocks` ("the base kept up to block_2")."""
    if base_blocks >= MOBILENET_V2_BLOCKS:
        return "MobileNetV2's whole base"
    return f"MobileNetV2's base kept up to {f'block_{base_blocks}' if base_blocks else 'expanded_conv'}"


def base_layer_count(base_blocks: int, alpha: float) -> int:
    """The layers of the base of width `alpha` that keeps `base_blocks` of MobileNetV2's blocks
    (TrainingConfig.base_blocks)."""
    if base_blocks >= MOBILENET_V2_BLOCKS:
        return mobilenet_v2.base_layers(alpha)
    return mobilenet_v2.layers_to_block(alpha)[base_blocks]


class ConfigError(CommandError, ValueError):
    """A configuration value is out of range; the message names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"invalid {field}: {message}")
        self.field = field


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# TensorFlow's JPEG decoder refuses an output of 2**29 values or more (height x width x 3 channels).
JPEG_DECODER_MAX_PIXELS = ((1 << 29) - 1) // 3


@dataclasses.dataclass(frozen=True)
class DataConfig:
    image_size: int = setting(160, "Side in pixels of the square images the model sees (e.g. 128, 160, 224).")
    train_buckets: int = setting(
        8, "Ingest: hash buckets of the train split (train:eval:test with --eval-buckets and --test-buckets), for "
           "images their source gives no split.")
    eval_buckets: int = setting(
        1, "Ingest: hash buckets of the eval split, on which the Trainer keeps its best epoch (a validation split).")
    test_buckets: int = setting(
        1, "Ingest: hash buckets of the test split, on which the Evaluator scores and blesses the model.")
    max_image_pixels: int = setting(50_000_000, "Ingest: images with more pixels are quarantined "
                                               "(decompression bombs).")
    max_file_mb: int = setting(
        256, "Ingest: image files larger than this many MiB are quarantined unread. Above any image within the "
             "default --max-image-pixels (a 32-bit BMP of 50 megapixels is 191 MiB), and far below the memory a "
             "multi-GB file would take: each file is read whole to be checked.")
    span_window: int = setting(1, "Train on the last N ingested spans (1: the latest only).")
    max_class_ratio: float = setting(
        3.0, "Data check: stop when the larger class has more than this many times the examples of the smaller, in a "
             "split where classes at this ratio would give counts that lopsided less than 1% of the time.")
    min_eval_examples: int = setting(
        30, "Data check: stop when the split the Evaluator scores (test; eval in a span without one) has fewer "
            "examples: on 30 images a 95% interval of the accuracy is about +-0.1 wide (docs/pipeline.md); "
            "0: no minimum.")
    max_size_drift: float = setting(
        0.5, "Data check: stop when the mean image height or width moves by more than this fraction from the "
             "previous span's.")

    def __post_init__(self) -> None:
        _require(isinstance(self.image_size, int) and 32 <= self.image_size <= 1024,
                 "image_size", f"must be an integer in [32, 1024], got {self.image_size!r}")
        _require(isinstance(self.max_image_pixels, int) and 64 <= self.max_image_pixels <= JPEG_DECODER_MAX_PIXELS,
                 "max_image_pixels", f"must be an integer in [64, {JPEG_DECODER_MAX_PIXELS}] (TensorFlow's JPEG "
                 f"decoder, the Trainer's, takes no larger image), got {self.max_image_pixels!r}")
        _require(isinstance(self.max_file_mb, int) and self.max_file_mb >= 1, "max_file_mb",
                 f"must be an integer >= 1, got {self.max_file_mb!r}")
        _require(isinstance(self.span_window, int) and 1 <= self.span_window <= 1000, "span_window",
                 f"must be an integer in [1, 1000], got {self.span_window!r}")
        _require(_is_finite_number(self.max_class_ratio) and self.max_class_ratio >= 1, "max_class_ratio",
                 f"must be a number >= 1, got {self.max_class_ratio!r}")
        _require(_is_finite_number(self.max_size_drift) and self.max_size_drift > 0, "max_size_drift",
                 f"must be a number > 0, got {self.max_size_drift!r}")
        _require(isinstance(self.min_eval_examples, int) and self.min_eval_examples >= 0, "min_eval_examples",
                 f"must be an integer >= 0, got {self.min_eval_examples!r}")
        for name in ("train_buckets", "eval_buckets", "test_buckets"):
            value = getattr(self, name)
            _require(isinstance(value, int) and 1 <= value <= 1000, name,
                     f"must be an integer in [1, 1000], got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    weights: str = setting(
        WEIGHTS_IMAGENET,
        "MobileNetV2 base weights: 'imagenet' (downloaded by Keras), a path to a local "
        "weights file (.h5 / .weights.h5), or 'none' for random initialization.")
    alpha: float = setting(1.0, "MobileNetV2 width multiplier.")
    base_blocks: int = setting(
        MOBILENET_V2_BLOCKS,
        f"MobileNetV2's blocks the base keeps: {MOBILENET_V2_BLOCKS}, the whole base; N from 0 to "
        f"{MOBILENET_V2_BLOCKS - 1} ends it after Keras' block_N (0: after its first block), a shallower base that "
        "loads the same weights and trains and serves faster, with less abstract features.")
    batch_size: int = setting(32, "Training batch size.")
    head_epochs: int = setting(10, "Phase 1: epochs training the classification head on the frozen base.")
    fine_tune_epochs: int = setting(10, "Phase 2: epochs fine-tuning the top of the base (0 skips phase 2).")
    learning_rate: float = setting(1e-3, "Phase 1 Adam learning rate.")
    fine_tune_lr_factor: float = setting(0.1, "Phase 2 learning rate = learning_rate x this factor.")
    fine_tune_from: int = setting(100, "Index of the first base layer unfrozen in phase 2 (BatchNorm stays frozen).")
    dropout: float = setting(0.2, "Dropout rate before the output layer.")
    hidden_units: int = setting(0, "Units of an optional hidden Dense layer in the head (0: none).")
    flip: bool = setting(True, "Augment with random horizontal flips (training only).")
    rotation: float = setting(0.1, "Augmentation: max random rotation, as a fraction of a full turn.")
    zoom: float = setting(0.1, "Augmentation: max random zoom, as a fraction of the image.")
    cached_views: int = setting(
        6, "Augmented views of each training image whose frozen-base features are computed once: phase 1 "
           "reads the first two, one an epoch; phase 2 all of them, each epoch a random blend of two (0: augment "
           "and run the whole base every epoch).")
    blend_views: bool = setting(
        True, "With cached views, each epoch of phase 2 reads a blend of two views of every image, with a "
              "random weight, rather than one view.")
    cache_memory_mb: int = setting(
        2048, "Memory budget of the cached views, in MiB; a larger cache goes to files under the Trainer's "
              "output.")
    early_stopping_patience: int = setting(3, "Epochs without eval-loss improvement before a phase stops (0: never).")
    calibration_images: int = setting(
        256, "With random weights only: train images used to set BatchNorm statistics before phase 1.")
    shuffle_buffer: int = setting(1024, "Shuffle buffer size, in examples.")
    seed: int = setting(42, "Random seed for initialization, shuffling and augmentation.")
    tflite: bool = setting(True, "Also export float16 and int8 TFLite models beside the SavedModel.")
    tflite_calibration_images: int = setting(200, "Training images that calibrate the int8 TFLite model.")
    warm_start: bool = setting(
        False, "Start from the weights of the newest blessed model trained before this data arrived "
               "(same architecture needed); without one, start as configured.")

    def __post_init__(self) -> None:
        _require(isinstance(self.weights, str) and self.weights.strip() != "", "weights",
                 "must be 'imagenet', 'none' or a path to a weights file")
        _require(_is_finite_number(self.alpha) and 0 < self.alpha <= MAX_ALPHA, "alpha",
                 f"must be in (0, {MAX_ALPHA:g}], got {self.alpha!r}")
        if self.weights == WEIGHTS_IMAGENET:
            _require(self.alpha in IMAGENET_ALPHAS, "alpha",
                     f"ImageNet weights exist only for alpha in {IMAGENET_ALPHAS}, got {self.alpha!r}")
        for name in ("batch_size", "shuffle_buffer"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, f"must be an integer >= 1, got {value!r}")
        for name in ("head_epochs", "fine_tune_epochs", "early_stopping_patience", "hidden_units",
                     "fine_tune_from", "calibration_images", "tflite_calibration_images", "cached_views",
                     "cache_memory_mb"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name,
                     f"must be an integer >= 0, got {value!r}")
        _require(isinstance(self.base_blocks, int) and not isinstance(self.base_blocks, bool)
                 and 0 <= self.base_blocks <= MOBILENET_V2_BLOCKS, "base_blocks",
                 f"must be an integer in [0, {MOBILENET_V2_BLOCKS}], got {self.base_blocks!r}")
        layers = base_layer_count(self.base_blocks, self.alpha)
        _require(self.fine_tune_epochs == 0 or self.fine_tune_from < layers, "fine_tune_from",
                 f"must be below {layers} ({base_description(self.base_blocks)} has {layers} layers; phase 2 would "
                 f"unfreeze none), got {self.fine_tune_from!r}")
        _require(self.head_epochs + self.fine_tune_epochs >= 1, "head_epochs",
                 "head_epochs + fine_tune_epochs must be >= 1: nothing would be trained")
        for name in ("learning_rate", "fine_tune_lr_factor"):
            value = getattr(self, name)
            _require(_is_finite_number(value) and 0 < value <= 1, name, f"must be in (0, 1], got {value!r}")
        _require(_is_finite_number(self.dropout) and 0 <= self.dropout < 1, "dropout",
                 f"must be in [0, 1), got {self.dropout!r}")
        for name in ("rotation", "zoom"):
            value = getattr(self, name)
            _require(_is_finite_number(value) and 0 <= value < 1, name, f"must be in [0, 1), got {value!r}")
        _require(isinstance(self.seed, int), "seed", f"must be an integer, got {self.seed!r}")
        for name in ("warm_start", "blend_views"):
            value = getattr(self, name)
            _require(isinstance(value, bool), name, f"must be true or false, got {value!r}")

    @property
    def fine_tune_learning_rate(self) -> float:
        return self.learning_rate * self.fine_tune_lr_factor

    @property
    def random_init(self) -> bool:
        return self.weights == WEIGHTS_NONE


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """The budget of a hyperparameter search (`run --tune`): TFX's Tuner runs trainer.tuning's trials before the
    Trainer, which then trains with the best trial's settings. Not a section of PipelineConfig: a run without
    --tune searches nothing, and these values are then not used."""

    trials: int = setting(10, "With --tune: trials of the search, the configured settings first.")
    minutes: float = setting(
        0.0, "With --tune: start no trial after this many minutes of search (the running one finishes); 0: no "
             "limit but --tune-trials.")
    epoch_fraction: float = setting(
        0.25, "With --tune: each phase of a trial runs at most this fraction of the epochs its settings name (at "
              "least one), on one cached view and without export: a trial costs a fraction of a Trainer run.")

    def __post_init__(self) -> None:
        _require(isinstance(self.trials, int) and not isinstance(self.trials, bool) and 1 <= self.trials <= 1000,
                 "tune_trials", f"must be an integer in [1, 1000], got {self.trials!r}")
        _require(_is_finite_number(self.minutes) and self.minutes >= 0, "tune_minutes",
                 f"must be a number >= 0 (0: no time limit), got {self.minutes!r}")
        _require(_is_finite_number(self.epoch_fraction) and 0 < self.epoch_fraction <= 1, "tune_epoch_fraction",
                 f"must be in (0, 1], got {self.epoch_fraction!r}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    min_accuracy: float = setting(
        0.8, "Blessing needs accuracy >= this on the test split (the images the Evaluator scores). A value above 1.0 "
        "blesses nothing (useful to dry-run a deploy).")
    max_accuracy_drop: float = setting(
        0.0, "Blessing needs accuracy >= the served model's (else the newest blessed one's) minus this tolerance "
        "(0: at least as good).")

    def __post_init__(self) -> None:
        _require(_is_finite_number(self.min_accuracy) and self.min_accuracy >= 0, "min_accuracy",
                 f"must be a number >= 0, got {self.min_accuracy!r}")
        _require(_is_finite_number(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 1,
                 "max_accuracy_drop", f"must be in [0, 1], got {self.max_accuracy_drop!r}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    name: str = "cats-vs-dogs"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name.replace("-", "").replace("_", "").isalnum(),
                 "name", f"must be letters, digits, '-' or '_', got {self.name!r}")

    def replace(self, **overrides: Any) -> "PipelineConfig":
        """Returns a copy with fields of any section replaced, by field name."""
        return with_overrides(self, overrides)


SECTIONS = ("data", "training", "evaluation")


def section_fields() -> list[tuple[str, dataclasses.Field]]:
    """(section, field) for every tunable field, in declaration order."""
    return [(section, f) for section in SECTIONS
            for f in dataclasses.fields(PipelineConfig.__dataclass_fields__[section].default_factory)]


def as_flag(name: str, value: Any) -> str:
    """A setting as the command-line flag that gives it: --min-accuracy 0.8, --tune, --no-warm-start."""
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else "--no-" + name.replace("_", "-")
    return f"{option} {value}"


def with_overrides(config: PipelineConfig, overrides: Mapping[str, Any]) -> PipelineConfig:
    """Applies {field_name: value} to the section that owns each field.

    Unknown names raise ConfigError instead of being ignored, so a typo never
    silently trains with a default.
    """
    by_section: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    owners = {f.name: section for section, f in section_fields()}
    top_level = {}
    for key, value in overrides.items():
        if key in owners:
            by_section[owners[key]][key] = value
        elif key == "name":
            top_level[key] = value
        else:
            raise ConfigError(key, "no such setting")
    sections = {s: dataclasses.replace(getattr(config, s), **v) for s, v in by_section.items() if v}
    return dataclasses.replace(config, **top_level, **sections)


# The training schedule for random weights. The defaults are made for ImageNet weights: a few epochs, the top
# of the base fine-tuned, early stopping. With random weights there are no pretrained features to protect, so
# phase 2 unfreezes most of the base to learn them, over more epochs; no early stopping, as a small eval split's
# loss is too noisy to stop on (the best weights are kept all the same). Every epoch augments and runs the whole
# base: a network that learns its features from these images learns them from fresh views, and cached views did
# not hold up on looks nobody tuned them on. The layer and the views were chosen across looks, tuned and held out:
# the figures are in docs/performance.md, "The from-scratch schedule across looks" (`make bench-looks`).
FROM_SCRATCH_SCHEDULE = {"fine_tune_from": 30, "head_epochs": 6, "fine_tune_epochs": 12,
                         "early_stopping_patience": 0, "cached_views": 0}


def from_user_settings(settings: Mapping[str, Any], base: PipelineConfig | None = None
                       ) -> tuple[PipelineConfig, dict[str, Any]]:
    """The configuration of `settings` ({field name: value}, what the user set) over `base`.

    When the settings turn the weights random and leave a field of
    FROM_SCRATCH_SCHEDULE unset, that field takes the from-scratch value.
    Returns the configuration and the fields so filled in ({} if none).
    """
    base = base or PipelineConfig()
    random = settings.get("weights", base.training.weights) == WEIGHTS_NONE and not base.training.random_init
    filled = {name: value for name, value in FROM_SCRATCH_SCHEDULE.items() if name not in settings} if random else {}
    try:  # in one step: a default the schedule replaces is never checked against the user's other settings
        return with_overrides(base, {**settings, **filled}), filled
    except ConfigError as error:  # a value the user never gave (a shorter base's --base-blocks): say so
        if error.field in settings:
            raise
        source = "the from-scratch schedule's value for random weights" if error.field in filled else "no flag set it"
        raise ConfigError(error.field, f"{str(error).split(': ', 1)[1]} ({source}; set "
                                       f"--{error.field.replace('_', '-')})") from None


def demo_config() -> PipelineConfig:
    """Settings for the generated demo images, where no ImageNet weights exist: random weights with the
    from-scratch schedule, and a bar the demo's model clears."""
    return with_overrides(PipelineConfig(), {"weights": WEIGHTS_NONE, **FROM_SCRATCH_SCHEDULE, "min_accuracy": 0.9})
