"""Where the summary says the trained model's hyperparameters came from, read from its training record."""

import dataclasses

from reporting import report_sections, run_summary
from trainer import hyperparameter_record as record_lib

TRIALS = [{"trial": "0", "values": {"dropout": 0.2}, "status": "completed", "val_loss": 0.41, "val_accuracy": 0.8,
           "kept": True},
          {"trial": "1", "values": {"dropout": 0.5}, "status": "failed", "reason": "ResourceExhaustedError: OOM",
           "kept": False}]
TUNED = {"hyperparameters": {"source": "tuned", "values": {"dropout": 0.2}, "fixed": ["head_epochs"],
                             "run": "run-3", "trials": TRIALS}}


def test_a_search_of_this_run_is_tuned_here_with_its_trial_table():
    chosen = run_summary.hyperparameters_of(TUNED, "run-3")
    view = chosen.summary_json()  # as run_summary.json holds it
    assert (view["source"], view["run"], view["trials"], view["cached"]) == (
        record_lib.TUNED_HERE, "run-3", TRIALS, False)
    assert run_summary.hyperparameter_lines(chosen) == [
        "  hyperparameters: tuned in this run: dropout 0.2",
        "    trial 0 (kept): val_loss 0.4100, val_accuracy 0.8000; dropout 0.2",
        "    trial 1: FAILED: ResourceExhaustedError: OOM; dropout 0.5"]


def test_a_cached_search_names_the_run_that_ran_it_and_does_not_claim_a_search_here():
    chosen = run_summary.hyperparameters_of(TUNED, "run-4", searched=True)
    assert (chosen.origin, chosen.cached) == (record_lib.TUNED_HERE, True)
    assert run_summary.hyperparameter_lines(chosen)[0] == (
        "  hyperparameters: the search of run run-3, cached (same data, settings and code: no trial ran in this run):"
        " dropout 0.2")
    assert report_sections.hyperparameters_page(chosen)["source_words"].startswith(
        "The search of run run-3, cached (no trial ran in this run), chosen on the eval split's loss")


def test_a_result_of_an_earlier_search_is_reused_and_names_its_run():
    chosen = run_summary.hyperparameters_of(TUNED, "run-5")
    view = chosen.summary_json()
    assert (view["source"], view["run"], view["trials"]) == (record_lib.REUSED, "run-3", None)
    assert run_summary.hyperparameter_lines(chosen) == ["  hyperparameters: reused from run run-3: dropout 0.2"]
    overridden = dataclasses.replace(chosen, values={}, fixed=("dropout",))
    assert run_summary.hyperparameter_lines(overridden) == [
        "  hyperparameters: reused from run run-3: none applied (each searched setting was given as a flag)"]


def test_without_a_search_the_defaults_are_named_and_an_older_record_shows_nothing():
    chosen = run_summary.hyperparameters_of({"hyperparameters": {"source": "defaults", "values": {}, "fixed": []}},
                                            "run-1")
    assert chosen.origin == record_lib.DEFAULTS
    assert run_summary.hyperparameter_lines(chosen) == [
        "  hyperparameters: the settings as configured (no search recorded for this pipeline; run --tune to search)"]
    assert run_summary.hyperparameters_of({"devices": ["CPU:0"]}, "run-1") is None
    assert run_summary.hyperparameters_of(None, "run-1") is None


def test_a_search_for_another_model_not_applied_is_named_with_why():
    why = "the newest search, of run run-3, was for another model: alpha 0.35 (this run 0.5)"
    chosen = run_summary.hyperparameters_of({"hyperparameters": {"source": "defaults", "values": {}, "fixed": [],
                                                                 "run": "run-3", "not_applied": why}}, "run-4")
    assert run_summary.hyperparameter_lines(chosen) == [
        f"  hyperparameters: the settings as configured ({why}; run --tune to search)"]
    assert report_sections.hyperparameters_page(chosen)["source_words"] == (
        f"The settings as configured: {why} (run --tune to search).")


def test_the_report_shows_the_source_the_values_and_the_trial_table():
    page = report_sections.hyperparameters_page(run_summary.hyperparameters_of(TUNED, "run-3"))
    assert page["source_words"].startswith("Tuned in this run, chosen on the eval split's loss")
    assert page["values"] == {"dropout": 0.2} and page["fixed"] == ["head_epochs"]
    assert page["trial_rows"] == [["0 (kept)", "completed", 0.41, 0.8, "dropout 0.2", ""],
                                  ["1", "failed", "", "", "dropout 0.5", "ResourceExhaustedError: OOM"]]
    reused = report_sections.hyperparameters_page(run_summary.hyperparameters_of(TUNED, "run-9"))
    assert reused["source_words"] == "Reused from the search of run run-3 (no search in this run)."
    assert reused["trial_rows"] == []
