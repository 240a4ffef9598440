"""Trainer entry point: `run_fn`, referenced by module path `trainer.task.run_fn`.

Phase 1 trains the head on the frozen base. Phase 2 unfreezes the top of the
base and continues at a lower learning rate. The weights with the lowest eval
loss over both phases are the ones exported, so fine-tuning can never make
the exported model worse than phase 1 left it. The examples come through
trainer.readers; the hyperparameters' record, written once into the training
history, is trainer.hyperparameter_record's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
import warnings
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from config import DataConfig, TrainingConfig
from contract import interrupts, layout, progress
from trainer import devices, export, feature_cache, readers
from trainer import hyperparameters as hyperparameters_lib
from trainer import model as model_lib
from trainer.hyperparameter_record import CONFIGURED, SEARCHED, HyperparameterRecord

_MONITOR = "val_loss"
# Eval images on which the exported TFLite models are compared with the classifier: a cap, as each image
# costs one interpreter run per TFLite model.
TFLITE_CHECK_IMAGES = 500
# Distinct eval images in TF Serving's warm-up requests.
WARMUP_IMAGES = 32
# Cached views over the memory budget go here, under the Trainer's ModelRun output, and are removed after training.
CACHE_FOLDER = "feature_cache"


class _BestWeights(keras.callbacks.Callback):
    """Remembers the classifier's weights of the epoch with the lowest eval loss, across fits (and across the
    models the phases fit, which share the classifier's layers)."""

    def __init__(self, classifier: keras.Model):
        super().__init__()
        self.classifier = classifier
        self.best_value = np.inf
        self.best_epoch = None
        self._weights: dict[str, np.ndarray] | None = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(_MONITOR)
        if value is not None and value < self.best_value:
            self.best_value, self.best_epoch = float(value), epoch
            # Keyed by variable path: phase 2 changes which weights are trainable,
            # and with it the order of the weights.
            self._weights = {v.path: v.numpy() for v in self.classifier.weights}

    def restore(self) -> None:
        if self._weights is None:
            return
        for variable in self.classifier.weights:
            variable.assign(self._weights[variable.path])


@dataclasses.dataclass
class _Phases:
    """Fits phase after phase, numbering epochs on from the last phase and recording each one."""

    config: TrainingConfig
    callbacks: list
    history: list = dataclasses.field(default_factory=list)
    next_epoch: int = 0

    def fit(self, model, learning_rate, *, phase, epochs, data):
        """`data(first_epoch, epochs)` -> (train batches, eval batches, steps per epoch or None)."""
        what = "the head, the base frozen" if phase == "head" else \
            f"fine-tuning from layer {self.config.fine_tune_from}"
        first, last = self.next_epoch + 1, self.next_epoch + epochs
        progress.say(f"{feature_cache.SPEAKER.get()}: {what}: epochs {first}-{last} at a learning rate of "
                     f"{learning_rate:g}")
        model_lib.compile_model(model, learning_rate)
        train, evaluation, steps = data(self.next_epoch, epochs)
        stop = [keras.callbacks.EarlyStopping(monitor=_MONITOR, patience=self.config.early_stopping_patience)] \
            if self.config.early_stopping_patience else []
        result = model.fit(train, validation_data=evaluation, initial_epoch=self.next_epoch,
                           epochs=self.next_epoch + epochs, steps_per_epoch=steps, callbacks=self.callbacks + stop,
                           verbose=2)
        for offset, epoch in enumerate(result.epoch):
            record = {"phase": phase, "epoch": int(epoch), "learning_rate": learning_rate}
            record.update({key: float(values[offset]) for key, values in result.history.items()})
            self.history.append(record)
        self.next_epoch += len(result.epoch)
        if len(result.epoch) < epochs:  # said, or the next phase's epochs would seem to overlap this one's
            patience = self.config.early_stopping_patience
            progress.say(f"{feature_cache.SPEAKER.get()}: {what}: stopped after epoch {self.next_epoch} of "
                         f"{first}-{last}: the eval loss had not improved for {patience} epoch"
                         f"{'' if patience == 1 else 's'} (--early-stopping-patience)")


def warm_start_from(classifier: keras.Model, base_model_dir: str) -> str | None:
    """Copies the weights of a previous model into `classifier`.

    Returns None on success, or why it could not (missing file, another
    architecture): the caller then trains from its configured start.
    """
    path = os.path.join(base_model_dir, layout.KERAS_MODEL_FILE)
    if not tf.io.gfile.exists(path):
        return f"{path} does not exist"
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, "model.keras")
        tf.io.gfile.copy(path, local)
        previous = keras.models.load_model(local, compile=False)
    old = {v.path: v for v in previous.weights}
    new = {v.path: v for v in classifier.weights}
    if old.keys() != new.keys() or any(tuple(old[k].shape) != tuple(new[k].shape) for k in new):
        return "the previous model has another architecture (alpha, base blocks, image size or head differ)"
    for key, variable in new.items():
        variable.assign(old[key])
    return None


def _train_on_pixels(model, phases: _Phases, train_examples, eval_examples) -> None:
    """Every epoch augments the pixels and runs them through the whole model."""
    config = phases.config
    train, evaluation = readers.training_batches(train_examples, config), readers.eval_batches(eval_examples, config)
    if config.head_epochs:
        phases.fit(model, config.learning_rate, phase="head", epochs=config.head_epochs,
                   data=lambda first, epochs: (train, evaluation, None))
    if config.fine_tune_epochs:
        model_lib.unfreeze_for_fine_tuning(model, config.fine_tune_from)
        phases.fit(model, config.fine_tune_learning_rate, phase="fine_tune", epochs=config.fine_tune_epochs,
                   data=lambda first, epochs: (train, evaluation, None))


def _train_on_cached_views(model, phases: _Phases, train_examples, eval_examples, *, counts, cache_dir) -> dict:
    """Phase 1 on the cached pooled features, phase 2 on the cached activations at the cut (see
    trainer.feature_cache). Returns the cache's record for the history."""
    config = phases.config
    parts = feature_cache.split(model, config)
    train_images, eval_images = counts if counts else (feature_cache.count(train_examples),
                                                         feature_cache.count(eval_examples))
    try:
        started = time.monotonic()
        progress.say(f"{feature_cache.SPEAKER.get()}: caching the frozen base's views of {train_images:,} training "
                     f"and {eval_images:,} eval images (paid once, not every epoch)")
        cache = feature_cache.fill(model, parts, train_examples, eval_examples, train_images=train_images,
                                   eval_images=eval_images, config=config, cache_dir=cache_dir)
        later = " (the fine-tuning views are filled before phase 2)" if config.fine_tune_epochs else ""
        progress.say(f"{feature_cache.SPEAKER.get()}: the head's cached views ready in "
                     f"{time.monotonic() - started:.0f} s{later}")
        logging.info("Cached views: %s", cache.record())

        def data(part):
            def batches(first, epochs):
                train, steps = cache.training_epochs(part, first_epoch=first, epochs=epochs, config=config)
                return train, cache.eval_batches(part, config), steps
            return batches

        if config.head_epochs:
            phases.fit(parts.head_model(), config.learning_rate, phase="head", epochs=config.head_epochs,
                       data=data(feature_cache.POOLED))
        if config.fine_tune_epochs:
            cache.fill_fine_tune_views()
            logging.info("Cached views before phase 2: %s", cache.record())
            model_lib.unfreeze_for_fine_tuning(model, config.fine_tune_from)
            phases.fit(parts.top_model(), config.fine_tune_learning_rate, phase="fine_tune",
                       epochs=config.fine_tune_epochs, data=data(feature_cache.CUT))
    finally:
        feature_cache.remove(cache_dir)
    return {**cache.record(), "cut_layer": parts.cut}


class CheckInterrupts(keras.callbacks.Callback):
    """Raises a Ctrl-C that a finalizer swallowed (contract.interrupts.Interrupts) after the batch it came in."""

    def __init__(self, interrupts: interrupts.Interrupts):
        super().__init__()
        self.interrupts = interrupts

    def on_train_batch_end(self, batch, logs=None):
        self.interrupts.check()

    def on_test_batch_end(self, batch, logs=None):
        self.interrupts.check()


def train(config: TrainingConfig, image_size: int, train_examples: tf.data.Dataset,
          eval_examples: tf.data.Dataset, calibration_pixels: np.ndarray | None, log_dir: str | None = None,
          base_model_dir: str | None = None, cache_dir: str | None = None,
          counts: tuple[int, int] | None = None, extra_callbacks: list[keras.callbacks.Callback] = (),
          strategy: tf.distribute.Strategy | None = None,
          calibrations: model_lib.Calibrations | None = None) -> tuple[keras.Model, dict]:
    """Runs both phases and returns the best model and its history record.

    The examples are unbatched (uint8 pixels, float label) pairs; `counts`,
    if known, their numbers (train, eval); `cache_dir`, where cached views
    may go when they are over the memory budget; `strategy`, where to train
    (default: every visible GPU, see trainer.devices); `calibrations`, a search's calibrations to reuse
    (model_lib.calibrate_batchnorm).
    """
    strategy = strategy or devices.strategy()
    with strategy.scope():
        model, history = _train_in_scope(config, image_size, train_examples, eval_examples, calibration_pixels,
                                         log_dir=log_dir, base_model_dir=base_model_dir, cache_dir=cache_dir,
                                         counts=counts, extra_callbacks=extra_callbacks, calibrations=calibrations)
    history["devices"] = devices.training_devices(strategy)
    return model, history


def _train_in_scope(config, image_size, train_examples, eval_examples, calibration_pixels, *, log_dir,
                    base_model_dir, cache_dir, counts, extra_callbacks, calibrations) -> tuple[keras.Model, dict]:
    model = model_lib.build_model(config, image_size)
    classifier = model_lib.get_classifier(model)
    warm_started = False
    if config.warm_start and base_model_dir:
        problem = warm_start_from(classifier, base_model_dir)
        if problem:
            logging.warning("Not warm-starting from %s: %s", base_model_dir, problem)
        warm_started = problem is None
    if config.random_init and calibration_pixels is not None and not warm_started:
        model_lib.calibrate_batchnorm(model, calibration_pixels, calibrations)
    best = _BestWeights(classifier)
    callbacks: list[keras.callbacks.Callback] = [best, *extra_callbacks]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    phases = _Phases(config, callbacks)
    cache = None
    if config.cached_views:
        cache = _train_on_cached_views(model, phases, train_examples, eval_examples, counts=counts,
                                       cache_dir=cache_dir)
    else:
        _train_on_pixels(model, phases, train_examples, eval_examples)
    best.restore()
    fine_tune_start = next((e["epoch"] for e in phases.history if e["phase"] == "fine_tune"), None)
    history = {
        "epochs": phases.history,
        "fine_tune_start_epoch": fine_tune_start,
        "best_epoch": best.best_epoch,
        "best_val_loss": None if best.best_epoch is None else best.best_value,
        "monitor": _MONITOR,
        "warm_started_from": base_model_dir if warm_started else None,
        "cached_views": config.cached_views,
        "cache": cache,
    }
    return model, history


def train_from_seed(config: TrainingConfig, image_size: int, train_examples: tf.data.Dataset,
                    eval_examples: tf.data.Dataset, **train_kwargs) -> tuple[keras.Model, dict]:
    """train() on a calibration sample of `train_examples`, every random state seeded from config.seed first: the
    sample and the shuffles are drawn before the model seeds it, so without this a run's numbers would depend on
    what ran before it in the process (the Tuner's trials, in a local run's process)."""
    keras.utils.set_random_seed(config.seed)
    return train(config, image_size, train_examples, eval_examples, calibration_pixels(train_examples, config),
                 **train_kwargs)


def calibration_pixels(examples: tf.data.Dataset, config: TrainingConfig) -> np.ndarray | None:
    if not config.random_init or not config.calibration_images:
        return None
    return readers.sample_pixels(examples, config.calibration_images, config)


def training_config_from(custom_config: Mapping[str, Any]) -> tuple[TrainingConfig, int]:
    return TrainingConfig(**custom_config["training"]), int(custom_config["image_size"])


def tuned_config(config: TrainingConfig, result: Mapping[str, Any] | None, fixed=(),
                 image_size: int | None = None) -> tuple[TrainingConfig, HyperparameterRecord]:
    """`config` with a search's result (the Tuner's best_hyperparameters: tuned in this run or an earlier one;
    None: none recorded) laid on it, the fields the user set (`fixed`) kept; and the record of it for the
    training history. A result searched for another model than `config`'s at `image_size`
    (hyperparameters.other_model) is not laid on it: the settings as configured, and the record's `not_applied`
    says why."""
    tuned = dict((result or {}).get(hyperparameters_lib.TUNED_KEY) or {})
    other = hyperparameters_lib.other_model(result, config, image_size) if image_size is not None else None
    if other:
        return config, HyperparameterRecord(
            CONFIGURED, fixed=tuple(sorted(fixed)), run=tuned.get("run"),
            not_applied=f"the newest search, of run {tuned.get('run')}, was for another model: {other}")
    values = hyperparameters_lib.values_of(result)
    applied = {name: values[name] for name in hyperparameters_lib.applied_names(values, fixed)}
    trials = tuned.get("trials")
    record = HyperparameterRecord(SEARCHED if result is not None else CONFIGURED, applied, tuple(sorted(fixed)),
                                  run=tuned.get("run"), trials=None if trials is None else tuple(trials),
                                  budget=tuned.get("budget"),
                                  left_out=tuple(hyperparameters_lib.left_out(values, fixed)))
    return hyperparameters_lib.apply(config, values, fixed), record


@interrupts.ctrl_c_kept
def run_fn(fn_args) -> None:
    """TFX Trainer entry point. A Ctrl-C that a finalizer swallows (TensorFlow's objects are finalized all through
    a training) still stops it, after the batch it came in or at the end: else the run would go on to the Evaluator
    and the Pusher as if it had never come."""
    with interrupts.Interrupts() as caught:
        _train_and_export(fn_args, [CheckInterrupts(caught)])
        caught.check()


def _train_and_export(fn_args, callbacks: list[keras.callbacks.Callback]) -> None:
    # Keras cannot know a TFRecord dataset's length and warns each epoch that it "ran out of data".
    warnings.filterwarnings("ignore", message=".*ran out of data.*")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    config, image_size = training_config_from(fn_args.custom_config)
    config, chosen = tuned_config(config, fn_args.hyperparameters, fn_args.custom_config.get("fixed_settings") or (),
                                  image_size)
    logging.info("Hyperparameters: %s", chosen.to_json())
    devices.check_requested()
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    tft_layer = tf_transform_output.transform_features_layer()
    train_examples = readers.pixels_and_labels(fn_args.train_files, tft_layer)
    eval_examples = readers.pixels_and_labels(fn_args.eval_files, tft_layer)
    model, history = train_from_seed(
        config, image_size, train_examples, eval_examples, log_dir=fn_args.model_run_dir,
        base_model_dir=fn_args.base_model,
        cache_dir=os.path.join(fn_args.model_run_dir, CACHE_FOLDER),
        counts=(readers.count_records(fn_args.train_files), readers.count_records(fn_args.eval_files)),
        extra_callbacks=callbacks)
    logging.info("Best epoch %s with %s=%s", history["best_epoch"], _MONITOR, history["best_val_loss"])
    classifier = model_lib.get_classifier(model)
    history["model"] = model_lib.describe(classifier)
    # The record is written here once; the run summary, the report and the model card read it back.
    history["settings"], history["hyperparameters"] = dataclasses.asdict(config), chosen.to_json()
    export.export_serving_model(classifier, tf_transform_output, fn_args.serving_model_dir,
                                max_pixels=int(fn_args.custom_config.get("max_image_pixels",
                                                                          DataConfig.max_image_pixels)))
    export.write_warmup_requests(fn_args.serving_model_dir, readers.encoded_images(fn_args.eval_files, WARMUP_IMAGES))
    if config.tflite:
        representative = readers.sample_pixels(train_examples, max(1, config.tflite_calibration_images), config)
        check = [pixels for pixels, _ in eval_examples.take(TFLITE_CHECK_IMAGES).as_numpy_iterator()]
        fidelity = export.export_tflite(classifier, representative, fn_args.serving_model_dir,
                                        np.stack(check).astype("float32") if check else None)
        if fidelity:
            logging.info("TFLite against the classifier on %d eval images: %s", fidelity["images"],
                         export.tflite_agreement(fidelity))
    history_path = os.path.join(fn_args.serving_model_dir, layout.TRAINING_HISTORY_FILE)
    with tf.io.gfile.GFile(history_path, "w") as f:
        json.dump(history, f, indent=2)
