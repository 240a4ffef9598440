"""The search space of the hyperparameter search, and how a searched result is laid onto the training settings.

Pure: the Tuner's trials (trainer.tuning) and the Trainer's run_fn (trainer.task) both apply a result through
`apply`, so a trial trains what the Trainer will train with the same values. A result is KerasTuner's
HyperParameters config as TFX's Tuner writes it ({"space": [...], "values": {name: value}}), with the
search's record (components.tuner: the run, the trial table) under TUNED_KEY.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Collection, Mapping

import keras_tuner

from config import MOBILENET_V2_BLOCKS, TrainingConfig, base_layer_count

# One strength for both augmentations: rotation and zoom move together in the recipe, and one value halves what
# a small trial budget must explore.
AUGMENTATION = "augmentation"
# The searched names and the TrainingConfig fields each sets (all but AUGMENTATION are fields of their own).
FIELDS = {
    "learning_rate": ("learning_rate",),
    "fine_tune_lr_factor": ("fine_tune_lr_factor",),
    "fine_tune_from": ("fine_tune_from",),
    "dropout": ("dropout",),
    "head_epochs": ("head_epochs",),
    "fine_tune_epochs": ("fine_tune_epochs",),
    AUGMENTATION: ("rotation", "zoom"),
}
TUNED_KEY = "tuned"  # the search's own record beside KerasTuner's config
# What makes the model a search trained, besides the searched names: the base's weights (ImageNet's or random,
# whose settings and schedule differ), its width and depth, the head and the input size. A result found for
# another model says nothing about this one's settings and is not laid on them.
MODEL_SETTINGS = ("weights", "alpha", "base_blocks", "hidden_units")
COMPLETED, FAILED = "completed", "failed"  # a trial's status in the trial table
# Fine-tune depths tried besides the configured one: deep (the from-scratch schedule's 30), the middle, the
# recipe's default (100) and the top blocks only.
FINE_TUNE_DEPTHS = (30, 60, 100, 130)
PHASE_SCALES = (0.5, 1.0, 1.5)  # phase lengths tried, as multiples of the configured ones
DROPOUTS = (0.0, 0.1, 0.2, 0.3, 0.5)
AUGMENTATIONS = (0.0, 0.05, 0.1, 0.2)


def given_fields(fixed: Collection[str]) -> list[str]:
    """The fields of `fixed` that a search would set (in FIELDS' order)."""
    return [field for fields in FIELDS.values() for field in fields if field in fixed]


def _searched(name: str, fixed: Collection[str]) -> bool:
    return not any(field in fixed for field in FIELDS[name])


def trial_epochs(epochs: int, epoch_fraction: float) -> int:
    """The epochs a trial runs of a phase of `epochs`: at most `epoch_fraction` of them, at least one of a phase
    that has any."""
    return max(1, math.floor(epochs * epoch_fraction)) if epochs else 0


def phase_lengths(configured: int, epoch_fraction: float = 1.0) -> list[int]:
    """The lengths of a phase tried around `configured` (PHASE_SCALES), less those a trial at `epoch_fraction`
    would run for as many epochs as a length kept before them (the configured one first): the trials could not
    tell them apart, and the search would pick between them on noise."""
    kept: dict[int, int] = {trial_epochs(configured, epoch_fraction): configured}
    for length in sorted({max(1, round(configured * scale)) for scale in PHASE_SCALES}):
        kept.setdefault(trial_epochs(length, epoch_fraction), length)
    return sorted(kept.values())


def search_space(config: TrainingConfig, fixed: Collection[str] = (),
                 epoch_fraction: float = 1.0) -> keras_tuner.HyperParameters:
    """The space around `config`, whose own values are every hyperparameter's default (the first trial's).
    `fixed`: TrainingConfig fields the user set, which are not searched; `epoch_fraction`: the share of each
    phase's epochs a trial runs (phase_lengths)."""
    hp = keras_tuner.HyperParameters()
    searched = {name for name in FIELDS if _searched(name, fixed)}
    phase_2 = config.fine_tune_epochs > 0 or "fine_tune_epochs" in searched
    if "learning_rate" in searched:
        # The head's step size decides whether phase 1 converges in its few epochs or overshoots.
        hp.Float("learning_rate", min(1e-4, config.learning_rate), max(1e-2, config.learning_rate), sampling="log",
                 default=config.learning_rate)
    if phase_2 and "fine_tune_lr_factor" in searched:
        # Fine-tuning must move the pretrained weights without wrecking them: the right rate depends on the data.
        hp.Float("fine_tune_lr_factor", min(0.01, config.fine_tune_lr_factor),
                 max(0.5, config.fine_tune_lr_factor), sampling="log", default=config.fine_tune_lr_factor)
    if phase_2 and "fine_tune_from" in searched:
        # How much of the base adapts: the project's own looks moved by +-0.02 to 0.03 with the depth alone.
        layers = base_layer_count(config.base_blocks, config.alpha)
        depths = sorted({d for d in (*FINE_TUNE_DEPTHS, config.fine_tune_from) if d < layers})
        hp.Choice("fine_tune_from", depths, default=config.fine_tune_from)
    if "dropout" in searched:
        # The head overfits a small data set quickly; how much depends on how many images there are.
        hp.Choice("dropout", sorted({*DROPOUTS, config.dropout}), default=config.dropout)
    for name in ("head_epochs", "fine_tune_epochs"):
        configured = getattr(config, name)
        lengths = phase_lengths(configured, epoch_fraction)
        if name in searched and configured > 0 and len(lengths) > 1:
            # Phase lengths trade fit against overfitting; tried around the configured ones, so that the
            # search keeps the scale the user (or the from-scratch schedule) chose.
            hp.Choice(name, lengths, default=configured)
    if _searched(AUGMENTATION, fixed) and (config.rotation == config.zoom):
        # How different the views are: too little and phase 2 learns the views by heart, too much and the
        # views no longer look like the photos served.
        hp.Choice(AUGMENTATION, sorted({*AUGMENTATIONS, config.rotation}), default=config.rotation)
    return hp


def cold_trials(warm_started_from: str | None) -> str | None:
    """What a model warm-started from `warm_started_from` (None: not warm-started) must say of searched values:
    a trial has no earlier model (the Tuner reads none), so the values were chosen for a cold start."""
    if not warm_started_from:
        return None
    return (f"the search's trials did not warm-start as this Trainer did (from {warm_started_from}): the values "
            f"were chosen training from the configured start")


def budget_words(budget: dict | None) -> str | None:
    """"3 of 10 trials: the time budget (--tune-minutes 0.1) ran out" when it stopped the search first; else None."""
    if not budget or not budget.get("out_of_time"):
        return None
    return (f"{budget['ran']} of {budget['trials']} trials: the time budget (--tune-minutes {budget['minutes']:g}) "
            "ran out")


def values_of(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """{name: value} of a result (a HyperParameters config, as the Trainer gets it); {} for None."""
    return dict((result or {}).get("values") or {})


def apply(config: TrainingConfig, values: Mapping[str, Any], fixed: Collection[str] = ()) -> TrainingConfig:
    """`config` with the searched `values` laid on it: the names applied_names gives. A name one of whose fields
    is in `fixed` (set by the user) is left out whole: augmentation sets rotation and zoom together, and setting
    only the other half would train a pairing no trial tried. A name this search space does not know (a result of
    an older space) is left out; a value that does not fit the settings raises config.ConfigError, naming the
    field."""
    overrides = {field: values[name] for name in applied_names(values, fixed) for field in FIELDS[name]}
    return dataclasses.replace(config, **overrides)


def model_of(config: TrainingConfig, image_size: int) -> dict[str, Any]:
    """The model a search of `config` at `image_size` trains (recorded with its result, under TUNED_KEY)."""
    return {**{name: getattr(config, name) for name in MODEL_SETTINGS}, "image_size": image_size}


def other_model(result: Mapping[str, Any] | None, config: TrainingConfig, image_size: int) -> str | None:
    """How the model `result`'s search trained differs from the one `config` trains at `image_size` ("alpha 0.35
    (this run 0.5)"); None when they are the same, or when the result does not say (no result, an older record)."""
    searched = ((result or {}).get(TUNED_KEY) or {}).get("model")
    if not searched:
        return None
    searched = {"base_blocks": MOBILENET_V2_BLOCKS, **searched}  # records from before the setting: the whole base
    here = model_of(config, image_size)
    return ", ".join(f"{name} {searched[name]} (this run {here[name]})" for name in here
                     if name in searched and searched[name] != here[name]) or None


def applied_names(values: Mapping[str, Any], fixed: Collection[str] = ()) -> list[str]:
    """The names of `values` that `apply` lays on the settings."""
    return [name for name in values if name in FIELDS and _searched(name, fixed)]


def left_out(values: Mapping[str, Any], fixed: Collection[str] = ()) -> list[str]:
    """Why each name of `values` that sets several fields is not laid on the settings, when the user set one of
    them ("augmentation 0.2 not applied: it sets rotation and zoom together, and rotation was set"). A name of
    one field set by the user is among the fixed settings already."""
    return [f"{name} {values[name]} not applied: it sets {' and '.join(FIELDS[name])} together, and "
            f"{' and '.join(f for f in FIELDS[name] if f in fixed)} "
            f"{'was' if sum(f in fixed for f in FIELDS[name]) == 1 else 'were'} set"
            for name in values if len(FIELDS.get(name, ())) > 1 and not _searched(name, fixed)]
