"""The model card says what the artifacts say, and its limits follow from them."""

from components import model_card
from config import TrainingConfig


def _facts(**changes):
    import dataclasses

    facts = model_card.CardFacts(
        pipeline="cats-vs-dogs", model_uri="/runs/x/pipeline_root/Trainer/model/9",
        training=dataclasses.asdict(TrainingConfig(weights="none", alpha=0.35)),
        history={"epochs": [{}] * 5, "fine_tune_start_epoch": 2, "best_epoch": 3, "best_val_loss": 0.2512},
        spans=[{"span": 2, "source": "folder:/data/pets", "files_seen": 130, "counts": {
            "accepted": 120, "normalized": 5, "duplicate": 2, "quarantined": 3},
            "examples_per_label": {"cat": 100, "dog": 25},
            "examples_per_split": {"train": 75, "eval": 25, "test": 25}}],
        metrics={"candidate": {"example_count": 25.0, "binary_accuracy": 0.84, "auc": 0.9},
                 "baseline": {"example_count": 25.0, "binary_accuracy": 0.8}},
        by_label={"label=0": {"example_count": 20.0, "binary_accuracy": 0.9},
                  "label=1": {"example_count": 5.0, "binary_accuracy": 0.6}},
        thresholds=["binary_accuracy >= 0.8", "binary_accuracy at most 0 below the baseline's"],
        decision="met binary_accuracy >= 0.8 and binary_accuracy at most 0 below the baseline's",
        tflite={"images": 25, "models": {"float16": {"agreement": 1.0, "bytes": 2 ** 21},
                                         "int8": {"agreement": 0.96, "bytes": 2 ** 20}}},
        judged_split="test")
    return dataclasses.replace(facts, **changes)


def test_the_card_holds_each_section_with_the_artifacts_figures():
    card = model_card.render(_facts())
    for heading in ("## Intended use", "## Data", "## Training", "## Evaluation", "## Blessing",
                    "## TFLite models", "## Known limits"):
        assert heading in card
    assert "| 2 | folder:/data/pets | 130 | 120 | 5 | 2 | 3 | 0 | 100 | 25 | 75 | 25 | 25 |" in card
    carried = [{"span": 1, "examples": 7}, {"span": 3, "examples": 2}]
    carrying = _facts(spans=[{**_facts().spans[0], "carried": carried}])
    assert "| 3 | 9 | 100 |" in model_card.render(carrying), "the images carried from labeled queues"
    # each accuracy with its exact 95% interval on the 25 test images, which chose nothing
    assert "| binary_accuracy | 0.8400 [0.6392, 0.9546] | 0.8000 [0.5930, 0.9317] |" in card
    assert "Scored on the test split: images used neither in training nor in choosing the kept epoch." in card
    assert "| cat | 20 | 0.9000 |" in card and "| dog | 5 | 0.6000 |" in card  # label slices named
    assert "Thresholds: binary_accuracy >= 0.8; binary_accuracy at most 0 below the baseline's." in card
    assert "5 epochs run; fine-tuning started after epoch 2; weights kept from epoch 4" in card
    assert "| int8 | 96.0% of 25 eval images | 1.0 |" in card
    assert "| label | test images | accuracy |" in card, "the by-label table counts the split it scored"
    assert card.startswith("# Model card: cats-vs-dogs\n\nA copy of the Trainer's output `/runs/x/")
    served = model_card.render(_facts(served_as="serving_model/3"))
    assert "\nVersion `serving_model/3`, a copy of the Trainer's output `/runs/x/pipeline_root/Trainer/model/9`" \
        in served
    assert "| fine_tune_from | 100 |" in card


def test_known_limits_follow_from_the_facts():
    limits = model_card.render(_facts()).split("## Known limits")[1]
    assert ("Evaluated on 25 test images: its accuracy of 0.8400 is known only to lie within [0.6392, 0.9546]"
            in limits)
    assert "Trained from random weights" in limits
    assert "unbalanced (cat 100, dog 25)" in limits
    assert "span(s) 2 only" in limits
    balanced = _facts(training={**_facts().training, "weights": "imagenet"},
                      spans=[{**_facts().spans[0], "examples_per_label": {"cat": 60, "dog": 65}}])
    limits = model_card.render(balanced).split("## Known limits")[1]
    assert "random weights" not in limits and "unbalanced" not in limits


def test_figures_of_a_span_without_a_test_split_are_called_optimistic():
    card = model_card.render(_facts(judged_split="eval"))
    assert "Scored on the eval split, which also chose the kept epoch (the span has no test split): these " \
           "figures are optimistic." in card
    assert "Evaluated on 25 eval images" in card


TUNED = {"source": "tuned", "values": {"learning_rate": 0.0003, "dropout": 0.3}, "fixed": ["head_epochs"],
         "run": "2026-05-01T03:00:00", "trials": [
             {"trial": "0", "values": {"learning_rate": 0.001, "dropout": 0.2}, "status": "completed",
              "val_loss": 0.41, "val_accuracy": 0.8, "kept": False},
             {"trial": "1", "values": {"learning_rate": 0.0003, "dropout": 0.3}, "status": "completed",
              "val_loss": 0.35, "val_accuracy": 0.85, "kept": True},
             {"trial": "2", "values": {"learning_rate": 0.01, "dropout": 0.0}, "status": "failed",
              "reason": "TrialFailed: loss is nan in epoch 2 (head)", "kept": False}]}


def test_the_card_names_the_searched_hyperparameters_their_run_and_every_trial():
    card = model_card.render(_facts(history={**_facts().history, "hyperparameters": TUNED}))
    assert ("The best of 3 trials of the hyperparameter search of run 2026-05-01T03:00:00, chosen on the eval "
            "split's loss (the test split took no part): learning_rate 0.0003, dropout 0.3. Set by the user, never "
            "searched: head_epochs.") in card
    assert "| 1 (kept) | completed | 0.3500 | 0.8500 | learning_rate 0.0003, dropout 0.3 |  |" in card
    assert ("| 2 | failed | - | - | learning_rate 0.01, dropout 0.0 | TrialFailed: loss is nan in epoch 2 (head) |"
            in card)
    defaults = model_card.render(_facts(history={**_facts().history, "hyperparameters": {
        "source": "defaults", "values": {}, "fixed": [], "run": None, "trials": None}}))
    assert "The settings as configured: no hyperparameter search was recorded for this pipeline." in defaults
    why = "the newest search, of run run-3, was for another model: alpha 0.35 (this run 0.5)"
    other = model_card.render(_facts(history={**_facts().history, "hyperparameters": {
        "source": "defaults", "values": {}, "fixed": [], "run": "run-3", "trials": None, "not_applied": why}}))
    assert f"The settings as configured: {why}." in other


def test_the_card_shows_the_settings_the_model_trained_with(tmp_path):
    """The training history's settings (a search's values laid on the configured ones) win over the
    configured settings the pipeline passed."""
    import dataclasses
    import json

    from contract import layout

    (tmp_path / layout.TRAINING_HISTORY_FILE).parent.mkdir(parents=True)
    trained = dataclasses.asdict(TrainingConfig(dropout=0.3, learning_rate=0.0003))
    (tmp_path / layout.TRAINING_HISTORY_FILE).write_text(json.dumps({"settings": trained, "hyperparameters": TUNED}))
    facts = model_card.gather("cats-vs-dogs", "m", str(tmp_path), None, [], "",
                              dataclasses.asdict(TrainingConfig()))
    assert facts.training == trained
    assert "| dropout | 0.3000 |" in model_card.render(facts)


def test_a_rollbacks_copy_of_the_card_names_its_own_version():
    card = model_card.render(_facts(served_as="serving_model/1"))
    again = model_card.served_again(card, "serving_model/3", 1)
    assert "\nVersion `serving_model/3` (a rollback to version 1), a copy of the Trainer's output `/runs/x/" in again
    assert "serving_model/1" not in again and again.split("\n")[3:] == card.split("\n")[3:], "the rest as pushed"
    moved = model_card.served_again(card, "serving_model/3", 1, "/copy/pipeline_root/Trainer/model/9")
    assert "(a rollback to version 1), a copy of the Trainer's output `/copy/pipeline_root/Trainer/model/9` (its " \
        in moved and "/runs/x/" not in moved.split("\n")[2], "a root copied since names the model where it is now"


def test_the_card_names_a_base_kept_to_fewer_blocks_and_a_record_without_the_setting_as_the_whole_base():
    short = dict(_facts().training, base_blocks=2, fine_tune_from=18)
    assert "MobileNetV2's base kept up to block_2 with a small classification head" in model_card.render(
        _facts(training=short))
    older = {k: v for k, v in _facts().training.items() if k != "base_blocks"}
    for facts in (_facts(), _facts(training=older)):
        assert "a cat or a dog: MobileNetV2 with a small classification head, from" in model_card.render(facts)
