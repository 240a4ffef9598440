"""The hyperparameter search: `tuner_fn`, referenced by module path `trainer.tuning.tuner_fn` (TFX's Tuner).

A random search over trainer.hyperparameters' space, the configured settings
as its first trial, chosen on the eval split's loss (the split the Trainer
keeps its best epoch on); the test split, which the Evaluator blesses on,
never reaches it. Each trial is a cheap Trainer run (`run_trial`): the same
training code (trainer.task.train) with the same feature cache and memory
budget, on one cached view (one base pass over the training images, which
both phases read) and at most `epoch_fraction` of each phase's epochs, with
no export. A trial that fails (NaN loss, out of memory) is recorded as failed
with its reason and the search goes on; components.tuner stops the run when
every trial failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import math
import os
import time
import warnings
from typing import Any, Callable, Collection

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from keras_tuner.src import config as keras_tuner_config
from keras_tuner.src.engine import trial as trial_module
from tensorflow.python.framework import ops as tf_ops
from tfx.components.tuner.component import TunerFnResult

from config import TrainingConfig, TuningConfig
from contract import progress
from contract.errors import first_line
from contract.interrupts import Interrupts
from trainer import feature_cache, readers, task
from trainer import hyperparameters as hyperparameters_lib
from trainer import model as model_lib

OBJECTIVE = "val_loss"  # what the Trainer keeps its best epoch on
SEARCH_FOLDER = "search"  # KerasTuner's project folder, under the Tuner's working directory
TRIAL_VIEWS = 1  # cached views of a trial (the Trainer's default: 6, two of them through the whole base)
COMPLETED, FAILED = hyperparameters_lib.COMPLETED, hyperparameters_lib.FAILED


class TrialFailed(RuntimeError):
    """A trial's training diverged (a NaN or infinite loss); the message says where. Internal: KerasTuner
    records the trial as failed and the search goes on (components.tuner.SearchFailed ends a search)."""


def trial_config(config: TrainingConfig, epoch_fraction: float) -> TrainingConfig:
    """What a trial of `config` trains: at most `epoch_fraction` of each phase's epochs (at least one epoch of a
    phase that has any), on one cached view where the Trainer caches (one base pass over the training images,
    which both phases read: the Trainer's base passes are most of its time before phase 2's epochs), no warm
    start (trials have no earlier model) and no TFLite export."""
    return dataclasses.replace(
        config, head_epochs=hyperparameters_lib.trial_epochs(config.head_epochs, epoch_fraction),
        fine_tune_epochs=hyperparameters_lib.trial_epochs(config.fine_tune_epochs, epoch_fraction),
        cached_views=min(config.cached_views, TRIAL_VIEWS), warm_start=False, tflite=False)


def run_trial(config: TrainingConfig, image_size: int, train_examples: tf.data.Dataset,
              eval_examples: tf.data.Dataset, *, epoch_fraction: float, counts: tuple[int, int] | None = None,
              cache_dir: str | None = None, callbacks: Collection[keras.callbacks.Callback] = (),
              calibrations: model_lib.Calibrations | None = None) -> dict[str, Any]:
    """One trial of the settings `config`, on unbatched (uint8 pixels, float label) pairs as the Trainer reads
    them (trainer.readers.pixels_and_labels). Returns {"val_loss", "val_accuracy" (at the kept epoch), "epochs",
    "seconds", "train_images" and "eval_images" (the cache's counts; None without cached views)}; raises
    TrialFailed when the loss is not finite. Callable on its own (the benchmark times it against
    trainer.task.train on the same data)."""
    started = time.perf_counter()
    cheap = trial_config(config, epoch_fraction)
    # Every trial from the same random state, as the Trainer: the first trial (the configured settings) is compared
    # with the rest on the same draws.
    with _trial_gradients_released():
        _, history = task.train_from_seed(cheap, image_size, train_examples, eval_examples, cache_dir=cache_dir,
                                          counts=counts, extra_callbacks=list(callbacks), calibrations=calibrations)
    for record in history["epochs"]:
        for key in ("loss", OBJECTIVE):
            if key in record and not math.isfinite(record[key]):
                raise TrialFailed(f"{key} is {record[key]} in epoch {record['epoch'] + 1} ({record['phase']})")
    if history["best_epoch"] is None:
        raise TrialFailed(f"no epoch recorded a finite {OBJECTIVE}")
    kept = next(r for r in history["epochs"] if r["epoch"] == history["best_epoch"])
    cache = history["cache"] or {}
    return {OBJECTIVE: history["best_val_loss"], "val_accuracy": kept.get("val_accuracy"),
            "epochs": len(history["epochs"]), "seconds": round(time.perf_counter() - started, 3),
            "train_images": cache.get("train_images"), "eval_images": cache.get("eval_images")}


@contextlib.contextmanager
def _trial_gradients_released():
    """Unregisters the gradient functions TensorFlow registers while a trial traces its train step. Tracing a
    custom gradient in graph mode (Keras' train step does) registers a gradient function in TensorFlow's global
    registry, never removed, whose closure holds the whole traced step: every trial's graph stayed reachable,
    about 18 MB a trial at 32 px (docs/performance.md, Tuner). The trial's model and graph are gone after it."""
    registry = tf_ops._gradient_registry._registry  # noqa: SLF001 (no public way to unregister)
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                del registry[name]


class BudgetOracle(keras_tuner.oracles.RandomSearchOracle):
    """Random search whose first trial is the configured settings (the space's defaults), and which starts no
    trial once `minutes` have passed since it was made (0: no time limit). KerasTuner's oracles stop on a trial
    count only."""

    def __init__(self, *args, minutes: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = time.monotonic() + minutes * 60 if minutes else None
        self.out_of_time = False  # the time budget, not the trial count, ended the search

    def populate_space(self, trial_id):
        if self.deadline is not None and self.trials and time.monotonic() > self.deadline:
            self.out_of_time = True
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        if not self.trials:
            return {"status": trial_module.TrialStatus.RUNNING, "values": self.hyperparameters.values}
        return super().populate_space(trial_id)


TrialFunction = Callable[..., dict]
# Storage faults TensorFlow reports as text inside another error (an InternalError of the dataset that wrote the
# cached views): the words its message carries, and the fault's errno.
_STORAGE_FAULTS = (("No space left on device", errno.ENOSPC), ("File too large", errno.EFBIG))


def trial_reason(error: Exception, cache_dir: str | None) -> str:
    """Why a trial failed, in one line: a storage fault while its features were cached (a full disk, a file size
    limit), however TensorFlow wrapped it, in the words of the feature cache's own "no space left"; any other
    error's first line with its type."""
    text = str(error)
    for words, number in _STORAGE_FAULTS:
        if words in text or getattr(error, "errno", None) == number:
            where = f" under {cache_dir}" if cache_dir else ""
            return (f"FeatureCacheError: no room to cache the base's features{where} ({words}, errno "
                    f"{errno.errorcode[number]}): free space there, lift the file size limit or raise "
                    "--cache-memory-mb")
    return first_line(error, with_type=True)



class CheapTrials(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial with `trial` (default run_trial) on the settings its values make of `base`, and keeps the
    trial table: each trial's values, outcome and figures, or why it failed."""

    def __init__(self, oracle, *, base: TrainingConfig, image_size: int, tuning: TuningConfig,
                 fixed: Collection[str] = (), trial: TrialFunction = run_trial, **kwargs):
        super().__init__(oracle, **kwargs)
        self.base, self.image_size, self.tuning, self.fixed = base, image_size, tuning, tuple(fixed)
        self._trial = trial
        self.outcomes: dict[str, dict] = {}
        self.interrupts = Interrupts()
        # the search's BatchNorm calibrations, which its trials share (model_lib.calibrate_batchnorm)
        self.calibrations: model_lib.Calibrations | None = None

    @staticmethod
    def number(trial_id: str) -> str:
        """The trial's number as KerasTuner prints it ("Running Trial #2" for its id "1"), counted from 1."""
        return str(int(trial_id) + 1)

    def run_trial(self, trial, train_examples, eval_examples, counts=None, cache_dir=None):
        values = dict(trial.hyperparameters.values)
        number = self.number(trial.trial_id)
        outcome = {"trial": number, "values": values}
        self.outcomes[trial.trial_id] = outcome
        keras.backend.clear_session()  # each trial builds a model of its own: the last one's graph can go
        gc.collect()  # the last trial's finalizers run here, where a Ctrl-C they swallow is raised again below
        self.interrupts.check()
        trial_cache = os.path.join(cache_dir, number) if cache_dir else None
        speaker = feature_cache.SPEAKER.set(f"Tuner trial {number}")
        try:
            config = hyperparameters_lib.apply(self.base, values, self.fixed)
            result = self._trial(config, self.image_size, train_examples, eval_examples,
                                 epoch_fraction=self.tuning.epoch_fraction, counts=counts, cache_dir=trial_cache,
                                 callbacks=[task.CheckInterrupts(self.interrupts)], calibrations=self.calibrations)
        except Exception as error:  # KerasTuner records the trial as failed; the table keeps why, in one line
            self.interrupts.check()  # not a failure of the trial's settings: the user stopped the search
            outcome.update(status=FAILED, reason=trial_reason(error, trial_cache))
            progress.say(f"Tuner trial {number} failed: {outcome['reason']}")
            raise
        finally:
            feature_cache.SPEAKER.reset(speaker)
        self.interrupts.check()
        outcome.update(status=COMPLETED, **result)
        return {OBJECTIVE: result[OBJECTIVE]}

    def search(self, *args, **kwargs):
        # KerasTuner prints a failed trial's traceback (its DEBUG switch is on by default); the failure's line is
        # printed above and kept in the trial table.
        debug, keras_tuner_config.DEBUG = keras_tuner_config.DEBUG, False
        try:
            self.calibrations = model_lib.Calibrations()
            with self.interrupts:
                super().search(*args, **kwargs)
                self.interrupts.check()
        finally:
            keras_tuner_config.DEBUG = debug

    def results_summary(self, num_trials=10):
        """KerasTuner's summary of the best trials (TFX's Tuner prints it), each trial numbered from 1 as KerasTuner
        numbers them while they run and the trial table does (its own summary prints the id, counted from 0)."""
        lines = ["Results summary", f"Results in {self.project_dir}", f"Showing {num_trials} best trials",
                 str(self.oracle.objective)]
        for trial in self.oracle.get_best_trials(num_trials):
            lines += ["", f"Trial {self.number(trial.trial_id)} summary", "Hyperparameters:",
                      *(f"{name}: {value}" for name, value in trial.hyperparameters.values.items()),
                      f"Score: {trial.score}"]
        progress.say("\n".join(lines))

    def on_trial_end(self, trial):
        reason = self.outcomes.get(trial.trial_id, {}).get("reason")
        if reason:
            trial.message = reason  # not the traceback KerasTuner keeps, which its summaries print
        super().on_trial_end(trial)

    def budget(self) -> dict:
        """{"trials" asked for, "ran", "out_of_time": whether the time budget stopped the search first}."""
        return {"trials": self.tuning.trials, "ran": len(self.outcomes), "minutes": self.tuning.minutes,
                "out_of_time": self.oracle.out_of_time}

    def trial_table(self) -> list[dict]:
        """Each trial in the order run: {"trial", "values", "status", and "val_loss", "val_accuracy", "epochs",
        "seconds" or "reason"}; the kept one has "kept": True."""
        best = self.oracle.get_best_trials(1)
        kept = best[0].trial_id if best else None
        table = []
        for trial_id in sorted(self.outcomes, key=lambda t: self.oracle.trials[t].trial_id):
            row = dict(self.outcomes[trial_id])
            if self.oracle.trials[trial_id].status != trial_module.TrialStatus.COMPLETED and \
                    row.get("status") == COMPLETED:  # KerasTuner turned it down (a NaN score)
                row.update(status=FAILED, reason=f"{OBJECTIVE} is not a number")
            row["kept"] = trial_id == kept
            table.append(row)
        return table


def build_tuner(base: TrainingConfig, image_size: int, tuning: TuningConfig, directory: str,
                fixed: Collection[str] = (), trial: TrialFunction = run_trial) -> CheapTrials:
    """The search over the space around `base` (trainer.hyperparameters), its project under `directory`."""
    space = hyperparameters_lib.search_space(base, fixed, tuning.epoch_fraction)
    oracle = BudgetOracle(objective=keras_tuner.Objective(OBJECTIVE, direction="min"), max_trials=tuning.trials,
                          seed=base.seed, hyperparameters=space,
                          allow_new_entries=False, tune_new_entries=False, minutes=tuning.minutes,
                          # every failure is recorded and the search goes on; components.tuner judges the end
                          max_consecutive_failed_trials=tuning.trials + 1)
    return CheapTrials(oracle, base=base, image_size=image_size, tuning=tuning, fixed=fixed, trial=trial,
                       directory=directory, project_name=SEARCH_FOLDER, overwrite=True)


def tuner_fn(fn_args) -> TunerFnResult:
    """TFX Tuner entry point: the search and what its trials read (the train and eval splits)."""
    # As in trainer.task.run_fn: Keras' warnings about a TFRecord dataset's unknown length, every epoch.
    warnings.filterwarnings("ignore", message=".*ran out of data.*")
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    config, image_size = task.training_config_from(fn_args.custom_config)
    tuning = TuningConfig(**fn_args.custom_config["tuning"])
    fixed = fn_args.custom_config.get("fixed_settings") or ()
    tft_layer = tft.TFTransformOutput(fn_args.transform_graph_path).transform_features_layer()
    tuner = build_tuner(config, image_size, tuning, fn_args.working_dir, fixed)
    return TunerFnResult(tuner=tuner, fit_kwargs={
        "train_examples": readers.pixels_and_labels(fn_args.train_files, tft_layer),
        "eval_examples": readers.pixels_and_labels(fn_args.eval_files, tft_layer),
        "counts": (readers.count_records(fn_args.train_files), readers.count_records(fn_args.eval_files)),
        "cache_dir": os.path.join(fn_args.working_dir, task.CACHE_FOLDER)})
