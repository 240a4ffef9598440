"""The hyperparameter search on tiny in-memory data: trials are cheap Trainer runs, a failed trial is recorded and
the search goes on, the configured settings are the first trial, the best values reach the Trainer's settings."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from components import tuner as tuner_component
from config import ConfigError, TrainingConfig, TuningConfig
from trainer import hyperparameters, task, tuning

SIZE = 32


def _examples(seed, n=16):
    """Unbatched (uint8 pixels, label) pairs, as the Trainer reads them; dogs brighter than cats."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.uniform(0, 120, (n, SIZE, SIZE, 3)) + labels[:, None, None, None] * 120
    return tf.data.Dataset.from_tensor_slices((pixels.astype("uint8"), labels[:, None].astype("float32")))


@pytest.fixture(scope="module")
def config():
    return TrainingConfig(weights="none", alpha=0.35, head_epochs=2, fine_tune_epochs=2, fine_tune_from=100,
                          early_stopping_patience=0, seed=5, batch_size=8, cached_views=2, calibration_images=8,
                          tflite=False)


def test_a_trial_shortens_each_phase_and_reads_one_cached_view(config):
    cheap = tuning.trial_config(TrainingConfig(head_epochs=10, fine_tune_epochs=10, cached_views=6,
                                               warm_start=True), 0.25)
    assert (cheap.head_epochs, cheap.fine_tune_epochs, cheap.cached_views) == (2, 2, 1)
    assert not cheap.warm_start and not cheap.tflite
    assert tuning.trial_config(TrainingConfig(head_epochs=1, fine_tune_epochs=0), 0.1).head_epochs == 1


def test_run_trial_trains_and_reports_the_kept_epochs_figures_the_same_from_any_random_state(config):
    results = []
    for state in (1, 2):  # the process's first trial and a later one see different global random states
        tf.random.set_seed(state)
        results.append(tuning.run_trial(config, SIZE, _examples(1), _examples(2, 8), epoch_fraction=0.5,
                                        counts=(16, 8)))
    result = results[0]
    assert result["epochs"] == 2  # one epoch of each phase: half of two
    assert math.isfinite(result["val_loss"]) and 0 <= result["val_accuracy"] <= 1
    assert results[1]["val_loss"] == result["val_loss"]  # the same settings, compared on the same draws


def test_the_trainer_trains_the_same_weights_whether_or_not_a_trial_ran_before_it_in_the_process(config):
    """run_fn trains through task.train_from_seed: a local run's Trainer comes after the Tuner's trials in the same
    process, and its numbers must not depend on them."""
    short = dataclasses.replace(config, head_epochs=1, fine_tune_epochs=1)

    def trained_weights():
        model, _ = task.train_from_seed(short, SIZE, _examples(1), _examples(2, 8), counts=(16, 8))
        return model.get_weights()

    tf.random.set_seed(1)
    alone = trained_weights()
    tuning.run_trial(dataclasses.replace(config, dropout=0.4), SIZE, _examples(1), _examples(2, 8),
                     epoch_fraction=0.5, counts=(16, 8))
    tf.random.uniform([7])
    after_a_trial = trained_weights()
    assert len(alone) == len(after_a_trial)
    assert all(np.array_equal(a, b) for a, b in zip(alone, after_a_trial))


def test_a_nan_loss_fails_the_trial_naming_it(config):
    nan_labels = _examples(3).map(lambda pixels, label: (pixels, label * np.nan))
    with pytest.raises(tuning.TrialFailed, match=r"^loss is nan in epoch 1 \(head\)"):
        tuning.run_trial(config, SIZE, nan_labels, _examples(2, 8), epoch_fraction=0.5, counts=(16, 8))


def _failing_wide_dropout(config, *args, **kwargs):
    """The real trial, except that settings with dropout >= 0.3 run out of memory."""
    if config.dropout >= 0.3:
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape [8,1280]\nmore")
    return tuning.run_trial(config, *args, **kwargs)


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on(config, tmp_path):
    search = tuning.build_tuner(config, SIZE, TuningConfig(trials=4, epoch_fraction=0.5), str(tmp_path),
                                fixed=("learning_rate", "fine_tune_lr_factor", "fine_tune_from", "head_epochs",
                                       "fine_tune_epochs", "rotation"), trial=_failing_wide_dropout)
    search.search(train_examples=_examples(1), eval_examples=_examples(2, 8), counts=(16, 8))
    table = search.trial_table()
    assert len(table) == 4
    assert table[0]["values"] == {"dropout": config.dropout}  # the configured settings first
    failed = [row for row in table if row["status"] == tuning.FAILED]
    completed = [row for row in table if row["status"] == tuning.COMPLETED]
    assert failed and completed, table
    assert all(row["values"]["dropout"] >= 0.3 for row in failed)
    assert all(row["reason"] == "ResourceExhaustedError: OOM when allocating tensor with shape [8,1280]"
               for row in failed)
    kept = [row for row in table if row["kept"]]
    assert len(kept) == 1 and kept[0]["val_loss"] == min(row["val_loss"] for row in completed)
    best = search.get_best_hyperparameters()[0].values
    assert best == kept[0]["values"]
    assert tuner_component.every_trial_failed(table) is None


def test_every_trial_failing_stops_in_one_line_naming_the_first():
    table = [{"trial": "00", "values": {"dropout": 0.2}, "status": tuning.FAILED, "reason": "TrialFailed: loss is nan"},
             {"trial": "01", "values": {"dropout": 0.5}, "status": tuning.FAILED, "reason": "OOM"}]
    line = tuner_component.every_trial_failed(table)
    assert line == ('every one of the 2 trials of the hyperparameter search failed; the first (trial 00, '
                    '{"dropout": 0.2}): TrialFailed: loss is nan')


def test_the_best_values_become_the_trainers_settings_but_not_the_users_own():
    result = tuner_component.search_record(
        {"space": [], "values": {"learning_rate": 3e-4, "dropout": 0.4, hyperparameters.AUGMENTATION: 0.05}},
        [{"trial": "00"}], "run-7")
    config, record = task.tuned_config(TrainingConfig(), result, fixed=("dropout",))
    assert (config.learning_rate, config.dropout, config.rotation, config.zoom) == (3e-4, 0.2, 0.05, 0.05)
    assert record == {"source": "tuned", "values": {"learning_rate": 3e-4, hyperparameters.AUGMENTATION: 0.05},
                      "fixed": ["dropout"], "run": "run-7", "trials": [{"trial": "00"}]}
    defaults, record = task.tuned_config(TrainingConfig(), None)
    assert defaults == TrainingConfig() and record["source"] == "defaults" and record["values"] == {}


def test_a_result_searched_for_another_model_is_not_laid_on_this_ones_settings():
    searched = TrainingConfig(weights="none", alpha=0.35, fine_tune_from=30)
    result = tuner_component.search_record({"space": [], "values": {"learning_rate": 3e-3, "fine_tune_from": 60}},
                                           [{"trial": "00"}], "run-7", hyperparameters.model_of(searched, 64))
    same_model = TrainingConfig(weights="none", alpha=0.35, fine_tune_from=30, batch_size=16)
    config, record = task.tuned_config(same_model, result, image_size=64)
    assert (config.learning_rate, config.fine_tune_from, record["source"]) == (3e-3, 60, "tuned")
    other = TrainingConfig()  # ImageNet weights, the full width
    config, record = task.tuned_config(other, result, image_size=96)
    assert config == other and (record["source"], record["values"], record["run"]) == ("defaults", {}, "run-7")
    assert record["not_applied"] == ("the newest search, of run run-7, was for another model: weights none (this "
                                     "run imagenet), alpha 0.35 (this run 1.0), image_size 64 (this run 96)")
    older = tuner_component.search_record({"space": [], "values": {"learning_rate": 3e-3}}, [], "run-2")
    assert task.tuned_config(other, older, image_size=96)[0].learning_rate == 3e-3  # a record that does not say


def test_the_space_is_centred_on_the_configured_settings_and_leaves_the_users_own_out():
    config = TrainingConfig(head_epochs=4, fine_tune_epochs=10, fine_tune_from=100, dropout=0.2)
    space = hyperparameters.search_space(config, fixed=("dropout",))
    assert space.values == {"learning_rate": config.learning_rate, "fine_tune_lr_factor": config.fine_tune_lr_factor,
                            "fine_tune_from": 100, "head_epochs": 4, "fine_tune_epochs": 10,
                            hyperparameters.AUGMENTATION: config.rotation}
    choices = {entry["config"]["name"]: entry["config"].get("values") for entry in space.get_config()["space"]}
    assert choices["head_epochs"] == [2, 4, 6] and choices["fine_tune_epochs"] == [5, 10, 15]
    assert hyperparameters.apply(config, space.values) == config


@pytest.mark.parametrize("budget,field", [({"trials": 0}, "tune_trials"), ({"minutes": -1.0}, "tune_minutes"),
                                          ({"epoch_fraction": -0.5}, "tune_epoch_fraction"),
                                          ({"epoch_fraction": 0.0}, "tune_epoch_fraction")])
def test_a_budget_that_cannot_run_is_refused_naming_it(budget, field):
    with pytest.raises(ConfigError, match=f"^invalid {field}: must be"):
        TuningConfig(**budget)


@pytest.mark.parametrize("argv,budget", [(["--tune"], TuningConfig()),
                                         (["--tune", "--tune-trials", "3"], TuningConfig(trials=3)),
                                         ([], None)])
def test_the_budget_flags_make_the_search_budget(argv, budget):
    import pipeline_runner
    from cli import flags

    args = pipeline_runner.build_parser().parse_args(["run", "--demo", *argv])
    assert flags.tuning_from_args(args) == budget


@pytest.mark.parametrize("argv", [["--tune-trials", "3"], ["--tune-trials", "10"], ["--tune-epoch-fraction", "0.25"]])
def test_a_budget_flag_without_tune_is_refused_even_at_its_default(argv):
    import pipeline_runner
    from cli import flags

    args = pipeline_runner.build_parser().parse_args(["run", "--demo", *argv])
    with pytest.raises(flags.SettingsError, match=f"^{argv[0]} applies only with --tune"):
        flags.tuning_from_args(args)


def test_budget_flags_without_tune_are_refused_in_one_sentence_that_agrees_with_them():
    import pipeline_runner
    from cli import flags

    args = pipeline_runner.build_parser().parse_args(["run", "--demo", "--tune-trials", "3", "--tune-minutes", "5"])
    with pytest.raises(flags.SettingsError, match="^--tune-trials, --tune-minutes apply only with --tune"):
        flags.tuning_from_args(args)


def test_the_time_budget_starts_no_trial_once_spent_and_the_first_trial_always_runs(config, tmp_path):
    def measured(config, *args, **kwargs):
        return {"val_loss": config.dropout, "val_accuracy": 0.5, "epochs": 1, "seconds": 0.0}
    search = tuning.build_tuner(config, SIZE, TuningConfig(trials=5, minutes=1e-9), str(tmp_path), trial=measured)
    search.search(train_examples=None, eval_examples=None)
    assert [row["trial"] for row in search.trial_table()] == ["0"]
    unlimited = tuning.build_tuner(config, SIZE, TuningConfig(trials=3), str(tmp_path / "all"), trial=measured)
    unlimited.search(train_examples=None, eval_examples=None)
    assert len(unlimited.trial_table()) == 3


def test_nothing_a_trial_traced_or_built_is_reachable_after_it(config, monkeypatch):
    """Each trial traces its own train step; what it leaves reachable stays for the whole search (up to
    --tune-trials 1000 trials in one process): its model and every graph it traced must be gone after it."""
    import gc
    import weakref

    from tensorflow.python.framework import func_graph

    def graphs():
        return {id(o): o for o in gc.get_objects() if isinstance(o, func_graph.FuncGraph)}

    left = []
    train = task.train

    def spy(*args, **kwargs):
        before = graphs()
        model, history = train(*args, **kwargs)
        left.append(weakref.ref(model))
        left.extend(weakref.ref(g) for key, g in graphs().items() if key not in before)
        return model, history

    monkeypatch.setattr(task, "train", spy)
    short = dataclasses.replace(config, head_epochs=1, fine_tune_epochs=1)
    tuning.run_trial(short, SIZE, _examples(1), _examples(2, 8), epoch_fraction=1.0, counts=(16, 8))
    gc.collect()
    assert len(left) > 2  # the model and the graphs its phases traced
    assert [ref() for ref in left if ref() is not None] == []
