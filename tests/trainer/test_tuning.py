"""The hyperparameter search on tiny in-memory data: trials are cheap Trainer runs, a failed trial is recorded and
the search goes on, the configured settings are the first trial, the best values reach the Trainer's settings."""

import dataclasses
import errno
import math
import os
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from components import tuner as tuner_component
from config import ConfigError, TrainingConfig, TuningConfig
from tests.helpers import CHEAP_BASE_BLOCKS, CHEAP_FINE_TUNE_FROM
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
    return TrainingConfig(weights="none", alpha=0.35, base_blocks=CHEAP_BASE_BLOCKS, head_epochs=2, fine_tune_epochs=2,
                          fine_tune_from=CHEAP_FINE_TUNE_FROM, early_stopping_patience=0, seed=5, batch_size=8,
                          cached_views=2, calibration_images=8, tflite=False)


def test_a_trial_shortens_each_phase_and_reads_one_cached_view(config):
    cheap = tuning.trial_config(TrainingConfig(head_epochs=10, fine_tune_epochs=10, cached_views=6,
                                               warm_start=True), 0.25)
    assert (cheap.head_epochs, cheap.fine_tune_epochs, cheap.cached_views) == (2, 2, 1)
    assert not cheap.warm_start and not cheap.tflite
    assert tuning.trial_config(TrainingConfig(head_epochs=1, fine_tune_epochs=0), 0.1).head_epochs == 1


@pytest.fixture(scope="module")
def trials_between_trainings(config):
    """The Trainer's training alone, then two trials from different global random states, then the same training
    again, in one process: what the next two tests read (each trial or training traces its phases: seconds)."""
    short = dataclasses.replace(config, head_epochs=1, fine_tune_epochs=1)

    def trained_weights():
        model, _ = task.train_from_seed(short, SIZE, _examples(1), _examples(2, 8), counts=(16, 8))
        return model.get_weights()

    tf.random.set_seed(1)
    alone = trained_weights()
    trials = []
    for state in (1, 2):  # the process's first trial and a later one see different global random states
        tf.random.set_seed(state)
        trials.append(tuning.run_trial(config, SIZE, _examples(1), _examples(2, 8), epoch_fraction=0.5,
                                       counts=(16, 8)))
    tf.random.uniform([7])
    return {"alone": alone, "trials": trials, "after_trials": trained_weights()}


def test_run_trial_trains_and_reports_the_kept_epochs_figures_the_same_from_any_random_state(
        trials_between_trainings):
    result, later = trials_between_trainings["trials"]
    assert result["epochs"] == 2  # one epoch of each phase: half of two
    assert math.isfinite(result["val_loss"]) and 0 <= result["val_accuracy"] <= 1
    assert later["val_loss"] == result["val_loss"]  # the same settings, compared on the same draws


def test_the_trainer_trains_the_same_weights_whether_or_not_a_trial_ran_before_it_in_the_process(
        trials_between_trainings):
    """run_fn trains through task.train_from_seed: a local run's Trainer comes after the Tuner's trials in the same
    process, and its numbers must not depend on them."""
    alone, after_trials = trials_between_trainings["alone"], trials_between_trainings["after_trials"]
    assert len(alone) == len(after_trials)
    assert all(np.array_equal(a, b) for a, b in zip(alone, after_trials))


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
    # Three trials (the search's draws are seeded): the configured one completes, the second fails, the third
    # completes after it, so the kept trial is chosen among two and the third reuses the first's calibration.
    search = tuning.build_tuner(config, SIZE, TuningConfig(trials=3, epoch_fraction=0.5), str(tmp_path),
                                fixed=("learning_rate", "fine_tune_lr_factor", "fine_tune_from", "head_epochs",
                                       "fine_tune_epochs", "rotation"), trial=_failing_wide_dropout)
    search.search(train_examples=_examples(1), eval_examples=_examples(2, 8), counts=(16, 8))
    table = search.trial_table()
    assert len(table) == 3
    assert table[0]["values"] == {"dropout": config.dropout}  # the configured settings first
    failed = [row for row in table if row["status"] == tuning.FAILED]
    completed = [row for row in table if row["status"] == tuning.COMPLETED]
    assert failed and completed, table
    statuses = [row["status"] for row in table]
    assert tuning.COMPLETED in statuses[statuses.index(tuning.FAILED):], statuses  # the search went on after it
    assert all(row["values"]["dropout"] >= 0.3 for row in failed)
    assert all(row["reason"] == "ResourceExhaustedError: OOM when allocating tensor with shape [8,1280]"
               for row in failed)
    kept = [row for row in table if row["kept"]]
    assert len(kept) == 1 and kept[0]["val_loss"] == min(row["val_loss"] for row in completed)
    best = search.get_best_hyperparameters()[0].values
    assert best == kept[0]["values"]
    assert tuner_component.every_trial_failed(table) is None
    # the trials' bases alike (dropout is the head's): calibrated once, its statistics set in the other trials
    assert len(search.calibrations) == 1 and search.calibrations.reused == len(completed) - 1


def test_every_trial_failing_stops_in_one_line_naming_the_first_and_each_trials_reason():
    table = [{"trial": "1", "values": {"dropout": 0.2}, "status": tuning.FAILED, "reason": "TrialFailed: loss is nan"},
             {"trial": "2", "values": {"dropout": 0.5}, "status": tuning.FAILED, "reason": "OOM"},
             {"trial": "3", "values": {"dropout": 0.1}, "status": tuning.FAILED, "reason": "OOM"},
             {"trial": "4", "values": {"dropout": 0.0}, "status": tuning.FAILED, "reason": "TrialFailed: loss is nan"}]
    line = tuner_component.every_trial_failed(table)
    assert line == ('every one of the 4 trials of the hyperparameter search failed; the first (trial 1, '
                    '{"dropout": 0.2}): TrialFailed: loss is nan; trial 2: OOM; trial 3: the same; trial 4: '
                    'TrialFailed: loss is nan')


def test_a_file_size_limit_fails_a_trial_in_the_one_clean_line_of_a_full_disk(config, tmp_path):
    raw = ('{{function_node __wrapped__ReduceDataset_Targuments_0}} Iterator "ReduceIterator::Root::Prefetch::'
           'FileCacheImpl" returned `OutOfRange`. Original message: /r/feature_cache/0/train-0_0.data-00000-of-00001'
           '.tempstate3402563226640504683; File too large [Op:ReduceDataset] name: ')

    def too_large(config, *args, **kwargs):
        raise tf.errors.InternalError(None, None, raw)
    search = tuning.build_tuner(config, SIZE, TuningConfig(trials=1), str(tmp_path), trial=too_large)
    search.search(train_examples=None, eval_examples=None, cache_dir="/r/feature_cache")
    [row] = search.trial_table()
    assert row["reason"] == ("FeatureCacheError: no room to cache the base's features under /r/feature_cache/1 "
                             "(File too large, errno EFBIG): free space there, lift the file size limit or raise "
                             "--cache-memory-mb")
    assert tuning.trial_reason(OSError(errno.ENOSPC, "No space left on device"), None) == (
        "FeatureCacheError: no room to cache the base's features (No space left on device, errno ENOSPC): free "
        "space there, lift the file size limit or raise --cache-memory-mb")


def test_the_best_values_become_the_trainers_settings_but_not_the_users_own():
    result = tuner_component.search_record(
        {"space": [], "values": {"learning_rate": 3e-4, "dropout": 0.4, hyperparameters.AUGMENTATION: 0.05}},
        [{"trial": "00"}], "run-7")
    config, record = task.tuned_config(TrainingConfig(), result, fixed=("dropout",))
    assert (config.learning_rate, config.dropout, config.rotation, config.zoom) == (3e-4, 0.2, 0.05, 0.05)
    assert record.to_json() == {  # as the training history holds it
        "source": "tuned", "values": {"learning_rate": 3e-4, hyperparameters.AUGMENTATION: 0.05},
        "fixed": ["dropout"], "run": "run-7", "trials": [{"trial": "00"}], "left_out": [], "budget": None}
    defaults, record = task.tuned_config(TrainingConfig(), None)
    assert defaults == TrainingConfig() and record.source == "defaults" and record.values == {}


@pytest.mark.parametrize("given", ["rotation", "zoom"])
def test_a_searched_pair_is_not_applied_by_half_when_the_user_set_the_other_half_and_the_record_says_so(given):
    from components import model_card
    from reporting import run_summary

    config, record = task.tuned_config(TrainingConfig(**{given: 0.3}), {"values": {"augmentation": 0.2}},
                                       fixed=(given,), image_size=160)
    assert (config.rotation, config.zoom) == (TrainingConfig(**{given: 0.3}).rotation,
                                              TrainingConfig(**{given: 0.3}).zoom)  # neither half of 0.2
    assert record.values == {}
    why = f"augmentation 0.2 not applied: it sets rotation and zoom together, and {given} was set"
    assert record.left_out == (why,)
    assert hyperparameters.applied_names({"augmentation": 0.2}, (given,)) == []
    chosen = run_summary.hyperparameters_of({"hyperparameters": record.to_json()}, "run-8")
    assert run_summary.hyperparameter_lines(chosen)[0].endswith(f"; {why}")
    assert f"A{why[1:]}." in "\n".join(model_card._hyperparameters(record))


def test_a_warm_started_model_says_its_settings_were_searched_by_trials_that_did_not_warm_start():
    from components import model_card
    from reporting import report_sections, run_summary

    trial = {"trial": "1", "values": {"dropout": 0.3}, "status": "completed", "val_loss": 0.5}
    _, record = task.tuned_config(TrainingConfig(warm_start=True), {"values": {"dropout": 0.3}, "tuned": {
        "run": "run-7", "trials": [trial]}})
    warm = {"hyperparameters": record.to_json(), "warm_started_from": "/root/Model/5/Format-Serving"}
    why = ("the search's trials did not warm-start as this Trainer did (from /root/Model/5/Format-Serving): the "
           "values were chosen training from the configured start")
    for run_id in ("run-7", "run-8"):  # tuned here, reused
        chosen = run_summary.hyperparameters_of(warm, run_id)
        assert run_summary.hyperparameter_lines(chosen)[0].endswith(f"; {why}")
        assert report_sections.hyperparameters_page(chosen)["source_words"].endswith(f" T{why[1:]}.")
    assert f"T{why[1:]}." in "\n".join(model_card._hyperparameters(
        dataclasses.replace(record, warm_started_from=warm["warm_started_from"])))
    cold = run_summary.hyperparameters_of({"hyperparameters": record.to_json(), "warm_started_from": None}, "run-7")
    assert "warm-start" not in run_summary.hyperparameter_lines(cold)[0]


def test_the_from_scratch_note_names_the_settings_trained_not_the_schedules_the_search_replaced():
    import config as config_lib
    from cli import flags
    from reporting import run_summary

    _, filled = config_lib.from_user_settings({"weights": "none"})
    note = flags._from_scratch_note(filled)
    _, record = task.tuned_config(TrainingConfig(), {"values": {"fine_tune_from": 60, "head_epochs": 9,
                                                                "learning_rate": 3e-4}, "tuned": {"run": "run-7"}})
    summary = run_summary.RunSummary("p", "run-8", [], {}, {}, None, None, None, None, None, notes=[note],
                                     hyperparameters=run_summary.hyperparameters_of(
                                         {"hyperparameters": record.to_json()}, "run-8"))
    shown = summary.text()
    assert ("from-scratch schedule --fine-tune-from 60 (searched; the schedule's 30), --head-epochs 9 (searched; "
            "the schedule's 6), --fine-tune-epochs 12, --early-stopping-patience 0" in shown)
    assert "--fine-tune-from 30," not in shown
    # the search kept the schedule's own value
    summary.hyperparameters = dataclasses.replace(summary.hyperparameters, values={"fine_tune_from": 30})
    assert "--fine-tune-from 30, --head-epochs 6," in summary.text()


def test_a_result_searched_for_another_model_is_not_laid_on_this_ones_settings():
    searched = TrainingConfig(weights="none", alpha=0.35, fine_tune_from=30)
    result = tuner_component.search_record({"space": [], "values": {"learning_rate": 3e-3, "fine_tune_from": 60}},
                                           [{"trial": "00"}], "run-7", hyperparameters.model_of(searched, 64))
    same_model = TrainingConfig(weights="none", alpha=0.35, fine_tune_from=30, batch_size=16)
    config, record = task.tuned_config(same_model, result, image_size=64)
    assert (config.learning_rate, config.fine_tune_from, record.source) == (3e-3, 60, "tuned")
    other = TrainingConfig()  # ImageNet weights, the full width
    config, record = task.tuned_config(other, result, image_size=96)
    assert config == other and (record.source, record.values, record.run) == ("defaults", {}, "run-7")
    assert record.not_applied == ("the newest search, of run run-7, was for another model: weights none (this "
                                     "run imagenet), alpha 0.35 (this run 1.0), image_size 64 (this run 96)")
    older = tuner_component.search_record({"space": [], "values": {"learning_rate": 3e-3}}, [], "run-2")
    assert task.tuned_config(other, older, image_size=96)[0].learning_rate == 3e-3  # a record that does not say


def test_a_shorter_base_searches_only_layers_inside_it_and_a_record_that_does_not_say_was_the_whole_base():
    short = TrainingConfig(weights="none", alpha=0.35, base_blocks=5, fine_tune_from=20)
    space = hyperparameters.search_space(short)
    choices = {entry["config"]["name"]: entry["config"].get("values") for entry in space.get_config()["space"]}
    assert choices["fine_tune_from"] == [20, 30]  # of the depths tried, those below its 54 layers
    searched = hyperparameters.model_of(dataclasses.replace(short, base_blocks=16, fine_tune_from=100), 64)
    del searched["base_blocks"]  # a search recorded before the setting existed
    result = tuner_component.search_record({"space": [], "values": {"learning_rate": 3e-3}}, [], "run-3", searched)
    config, record = task.tuned_config(short, result, image_size=64)
    assert config == short and record.not_applied.endswith("was for another model: base_blocks 16 (this run 5)")


def test_the_space_is_centred_on_the_configured_settings_and_leaves_the_users_own_out():
    config = TrainingConfig(head_epochs=4, fine_tune_epochs=10, fine_tune_from=100, dropout=0.2)
    space = hyperparameters.search_space(config, fixed=("dropout",))
    assert space.values == {"learning_rate": config.learning_rate, "fine_tune_lr_factor": config.fine_tune_lr_factor,
                            "fine_tune_from": 100, "head_epochs": 4, "fine_tune_epochs": 10,
                            hyperparameters.AUGMENTATION: config.rotation}
    choices = {entry["config"]["name"]: entry["config"].get("values") for entry in space.get_config()["space"]}
    assert choices["head_epochs"] == [2, 4, 6] and choices["fine_tune_epochs"] == [5, 10, 15]
    assert hyperparameters.apply(config, space.values) == config


def test_the_phase_lengths_searched_are_ones_the_trials_run_apart():
    scratch = TrainingConfig(weights="none", head_epochs=6, fine_tune_epochs=12, fine_tune_from=30)
    space = hyperparameters.search_space(scratch, epoch_fraction=0.25)
    choices = {entry["config"]["name"]: entry["config"].get("values") for entry in space.get_config()["space"]}
    assert choices["head_epochs"] == [6, 9] and choices["fine_tune_epochs"] == [6, 12, 18]  # 3 runs as 6: 1 epoch
    for name in ("head_epochs", "fine_tune_epochs"):
        run = [tuning.trial_config(dataclasses.replace(scratch, **{name: n}), 0.25) for n in choices[name]]
        assert len({getattr(cheap, name) for cheap in run}) == len(choices[name])
    assert space.values["head_epochs"] == 6  # the configured length stays, the first trial's
    short = hyperparameters.search_space(TrainingConfig(head_epochs=2, fine_tune_epochs=2), epoch_fraction=0.25)
    assert "head_epochs" not in short.values and "fine_tune_epochs" not in short.values  # every length runs 1


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


def test_a_search_with_every_searched_setting_given_as_a_flag_is_refused_in_one_line_before_any_work():
    import pipeline_runner
    from cli import flags

    given = ["--learning-rate", "0.001", "--fine-tune-lr-factor", "0.1", "--fine-tune-from", "30", "--dropout", "0.2",
             "--rotation", "0.1", "--head-epochs", "1", "--fine-tune-epochs", "1"]
    args = pipeline_runner.build_parser().parse_args(["run", "--demo", *given, "--tune", "--tune-trials", "5"])
    config, _ = flags.config_from_args(args)
    with pytest.raises(flags.SettingsError) as refused:
        flags.tuning_from_args(args, config.training)
    assert str(refused.value) == (
        "--tune has nothing to search: the flags --learning-rate, --fine-tune-lr-factor, --fine-tune-from, "
        "--dropout, --head-epochs, --fine-tune-epochs, --rotation set what it would search (a phase length every "
        "trial runs alike is not searched); drop --tune or one of those flags")
    args = pipeline_runner.build_parser().parse_args(["run", "--demo", *given[:-6], "--tune"])  # augmentation, lengths
    assert flags.tuning_from_args(args, flags.config_from_args(args)[0].training) == TuningConfig()


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
    assert [row["trial"] for row in search.trial_table()] == ["1"]  # as KerasTuner numbers it
    assert search.budget() == {"trials": 5, "ran": 1, "minutes": 1e-9, "out_of_time": True}
    unlimited = tuning.build_tuner(config, SIZE, TuningConfig(trials=3), str(tmp_path / "all"), trial=measured)
    unlimited.search(train_examples=None, eval_examples=None)
    assert len(unlimited.trial_table()) == 3
    assert not unlimited.budget()["out_of_time"]


def test_the_summary_report_and_model_card_say_the_time_budget_ran_out_before_the_trials_asked_for():
    from components import model_card
    from reporting import report_sections, run_summary

    table = [{"trial": "1", "values": {"dropout": 0.2}, "status": "completed", "val_loss": 0.5, "kept": True}]
    result = tuner_component.search_record({"space": [], "values": {"dropout": 0.2}}, table, "run-7", None,
                                           {"trials": 10, "ran": 1, "minutes": 0.1, "out_of_time": True})
    _, record = task.tuned_config(TrainingConfig(), result)
    chosen = run_summary.hyperparameters_of({"hyperparameters": record.to_json()}, "run-7")
    said = "1 of 10 trials: the time budget (--tune-minutes 0.1) ran out"
    assert run_summary.hyperparameter_lines(chosen)[1] == f"    {said}"
    assert f" {said}." in report_sections.hyperparameters_page(chosen)["source_words"]
    assert f" {said}." in "\n".join(model_card._hyperparameters(record))
    chosen = dataclasses.replace(chosen, budget={**chosen.budget, "out_of_time": False})
    assert said not in "\n".join(run_summary.hyperparameter_lines(chosen))


class _InterruptedWhenFinalized:
    """Ctrl-C arriving while a finalizer runs, as while the garbage collector finalizes a trial's TensorFlow
    functions: Python prints the KeyboardInterrupt ("Exception ignored in ...") and drops it."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here, inside the finalizer


@pytest.fixture
def ctrl_c_raises():
    """SIGINT handled as in a terminal (a suite started in the background may have it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the interrupt the finalizer lost
def test_a_ctrl_c_that_a_finalizer_swallows_still_stops_the_search(config, tmp_path, ctrl_c_raises):
    def interrupted(config, *args, **kwargs):
        finalized = _InterruptedWhenFinalized()
        del finalized  # the real SIGINT is raised inside __del__ and lost there
        return {"val_loss": config.dropout, "val_accuracy": 0.5, "epochs": 1, "seconds": 0.0}
    search = tuning.build_tuner(config, SIZE, TuningConfig(trials=3), str(tmp_path), trial=interrupted)
    with pytest.raises(KeyboardInterrupt):
        search.search(train_examples=None, eval_examples=None)
    assert list(search.outcomes) == ["0"]  # no trial started after it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the search's handler is gone


def test_a_swallowed_ctrl_c_stops_a_trial_after_the_batch_it_came_in(config):
    interrupts = tuning.Interrupts()
    interrupts.interrupted = True
    with pytest.raises(KeyboardInterrupt):
        tuning.run_trial(config, SIZE, _examples(1), _examples(2, 8), epoch_fraction=0.5, counts=(16, 8),
                         callbacks=[task.CheckInterrupts(interrupts)])


def test_trials_are_numbered_from_1_as_keras_tuner_prints_them_and_their_cache_lines_name_the_trial(
        config, tmp_path, capsys):
    from trainer import feature_cache

    calls = []

    def speaking(config, *args, **kwargs):
        print(f"{feature_cache.SPEAKER.get()}: the cached views' ...")
        calls.append(config)
        if len(calls) == 2:
            raise ValueError("no")
        return {"val_loss": 0.5, "val_accuracy": 0.5, "epochs": 1, "seconds": 0.0}
    search = tuning.build_tuner(config, SIZE, TuningConfig(trials=2), str(tmp_path), trial=speaking)
    search.search(train_examples=None, eval_examples=None)
    printed = capsys.readouterr().out
    assert [row["trial"] for row in search.trial_table()] == ["1", "2"]
    assert "Running Trial #1" in printed and "Running Trial #2" in printed
    assert "Tuner trial 1: the cached views'" in printed and "Tuner trial 2: the cached views'" in printed
    assert "Tuner trial 2 failed: ValueError: no" in printed
    assert feature_cache.SPEAKER.get() == "Trainer"  # the Trainer after the search speaks for itself again
    search.results_summary()  # what TFX's Tuner prints after the search
    printed = capsys.readouterr().out
    assert "\nTrial 1 summary\n" in printed and "\nTrial 2 summary\n" in printed
    assert "Trial 0 summary" not in printed and "Trial 00 summary" not in printed


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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the interrupt the finalizer lost
def test_a_ctrl_c_that_a_finalizer_swallows_during_the_trainer_s_work_still_stops_it(monkeypatch, ctrl_c_raises):
    """The Trainer's run_fn: a Ctrl-C lost in a finalizer stops the training after its batch (the callback it is
    given), and one lost after the last batch (the export's) stops it before the Evaluator and the Pusher run."""
    given = []

    def train_and_export(fn_args, callbacks):
        given.extend(callbacks)
        finalized = _InterruptedWhenFinalized()
        del finalized  # the real SIGINT is raised inside __del__ and lost there
    monkeypatch.setattr(task, "_train_and_export", train_and_export)
    with pytest.raises(KeyboardInterrupt):
        task.run_fn(None)
    (check,) = given
    assert isinstance(check, task.CheckInterrupts) and check.interrupts.interrupted
    with pytest.raises(KeyboardInterrupt):
        check.on_train_batch_end(0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the Trainer's handler is gone
