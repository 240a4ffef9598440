"""The tuning benchmark's figures: tuned against default paired by seed, on held-out looks only."""

import pytest
from pytest import approx

from benchmarks import looks, tuning


def _runs(default, tuned, held_out=("recolour", "print")):
    """Each look: the default schedule at `default` per seed, the tuned one at `tuned` per seed (100 test images)."""
    return [{"look": look, "setting": setting, "seed": seed, "accuracy": accuracy, "images": 100,
             "seconds": 10.0, "search_seconds": 30.0}
            for look in held_out
            for setting, values in ((looks.REFERENCE, default), (tuning.TUNED, tuned))
            for seed, accuracy in enumerate(values, 1)]


def test_the_table_gives_tuned_minus_default_with_the_seeds_paired_interval():
    protocol = tuning.Protocol(held_out=("recolour", "print"))
    steady = tuning.table(_runs([0.80, 0.70, 0.90], [0.82, 0.72, 0.92]), protocol)
    # the seeds disagree by 0.2 on their own, but each seed's tuned model is 0.02 better: the interval is tight
    assert "+0.020 [+0.020, +0.020] (3 seeds)" in steady
    assert "held-out looks" in steady and "search s (median): 30" in steady
    # the same mean difference from seeds that disagree: an interval that includes no gain
    noisy = looks.gap(_runs([0.80, 0.80, 0.80], [0.90, 0.76, 0.74]), ("recolour", "print"), tuning.TUNED)
    assert noisy["mean"] == approx(0.0) and noisy["low"] < 0 < noisy["high"]


def test_only_held_out_looks_are_measured(capsys):
    with pytest.raises(SystemExit) as refused:
        tuning.main(["--looks", "recolour,cartoon"])
    assert refused.value.code == 2
    assert "['cartoon']: not held-out looks" in capsys.readouterr().err
    assert set(tuning.SMALL.held_out) <= set(looks.HELD_OUT_LOOKS)
    assert not set(tuning.Protocol().held_out) & set(looks.TUNING_LOOKS)


@pytest.mark.e2e
def test_the_trial_benchmark_times_a_whole_trainer_run_and_its_training_against_one_trial(tmp_path):
    """`make bench-trial` alone: the target's ratio is to the whole Trainer run (training, then its export), the
    other to the training alone; both from the same timings (tiny images: the code path, not the figures)."""
    from benchmarks import trainer, trial_cost

    whole, training = trial_cost.bench_trial(trainer.QUICK, tmp_path, repeats=1)
    assert whole["value"] == training["value"] > 0 and whole["reference"] > training["reference"] > 0
    assert whole["ratio"] == approx(whole["value"] / whole["reference"])
    assert whole["met"] == (whole["ratio"] <= trial_cost.TARGET) and training["target"] is None
