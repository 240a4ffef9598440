import dataclasses
import math

import pytest

import config as config_lib
from config import ConfigError, PipelineConfig


@pytest.mark.parametrize("field, value, message", [
    ("image_size", 16, "image_size"),
    ("image_size", 160.5, "image_size"),
    ("train_buckets", 0, "train_buckets"),
    ("batch_size", 0, "batch_size"),
    ("learning_rate", 0.0, "learning_rate"),
    ("learning_rate", math.nan, "learning_rate"),
    ("fine_tune_lr_factor", 2.0, "fine_tune_lr_factor"),
    ("dropout", 1.0, "dropout"),
    ("head_epochs", -1, "head_epochs"),
    ("rotation", 1.5, "rotation"),
    ("min_accuracy", -0.1, "min_accuracy"),
    ("max_accuracy_drop", 1.5, "max_accuracy_drop"),
    ("weights", "", "weights"),
    ("base_blocks", 17, "base_blocks"),
    ("base_blocks", -1, "base_blocks"),
    ("base_blocks", True, "base_blocks"),
])
def test_rejects_bad_values_naming_the_field(field, value, message):
    with pytest.raises(ConfigError, match=f"invalid {message}") as error:
        PipelineConfig().replace(**{field: value})
    assert error.value.field == message


def test_imagenet_weights_need_a_published_alpha():
    with pytest.raises(ConfigError, match="alpha"):
        PipelineConfig().replace(alpha=0.6)
    assert PipelineConfig().replace(alpha=0.6, weights="none").training.alpha == 0.6
    assert PipelineConfig().replace(alpha=10.0, weights="none").training.alpha == 10.0
    with pytest.raises(ConfigError, match=r"invalid alpha: must be in \(0, 10\], got 10.5"):
        PipelineConfig().replace(alpha=10.5, weights="none")


def test_no_epochs_at_all_is_rejected():
    with pytest.raises(ConfigError, match="nothing would be trained"):
        PipelineConfig().replace(head_epochs=0, fine_tune_epochs=0)


def test_unknown_setting_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match="no such setting"):
        PipelineConfig().replace(learning_rat=0.1)


def test_overrides_reach_the_owning_section_and_keep_the_rest():
    config = PipelineConfig().replace(image_size=224, fine_tune_from=120, min_accuracy=0.95)
    assert (config.data.image_size, config.training.fine_tune_from, config.evaluation.min_accuracy) == (224, 120, 0.95)
    assert config.training.learning_rate == PipelineConfig().training.learning_rate


def test_fine_tune_rate_is_ten_times_lower_by_default():
    training = PipelineConfig().training
    assert training.fine_tune_learning_rate == pytest.approx(training.learning_rate / 10)


def test_impossible_accuracy_bar_is_allowed_for_dry_runs():
    assert PipelineConfig().replace(min_accuracy=1.01).evaluation.min_accuracy == 1.01


def test_every_field_has_help_and_field_names_are_unique():
    names = [f.name for _, f in config_lib.section_fields()]
    assert len(names) == len(set(names))
    assert all(f.metadata.get("help") for _, f in config_lib.section_fields())


def test_demo_config_trains_random_weights_deeper_and_longer_and_changes_nothing_else():
    demo, default = config_lib.demo_config(), config_lib.PipelineConfig()
    assert demo.training.random_init and not default.training.random_init
    # random weights have no features worth keeping frozen: more of the base trains, mostly in phase 2, and no
    # early stop on the noisy eval loss of the first epochs
    assert demo.training.fine_tune_from < default.training.fine_tune_from
    assert demo.training.fine_tune_epochs > demo.training.head_epochs
    assert demo.training.early_stopping_patience == 0 < default.training.early_stopping_patience
    assert (demo.data, demo.name) == (default.data, default.name)
    same = ("learning_rate", "fine_tune_learning_rate", "batch_size", "image_size", "alpha", "seed")
    assert all(getattr(demo.training, f, None) == getattr(default.training, f, None) for f in same)
    config_lib.TrainingConfig(**dataclasses.asdict(demo.training))  # passes validation on its own


def test_random_weights_take_the_from_scratch_schedule_where_the_user_set_none_of_it():
    config, filled = config_lib.from_user_settings({"weights": "none", "head_epochs": 3})
    training, imagenet = config.training, PipelineConfig().training
    assert training.head_epochs == 3 and "head_epochs" not in filled  # the user's own value stays
    assert filled and all(getattr(training, name) == value != getattr(imagenet, name)
                          for name, value in filled.items())
    assert training.fine_tune_from < imagenet.fine_tune_from


def test_imagenet_weights_and_the_demo_keep_their_schedules():
    assert config_lib.from_user_settings({"head_epochs": 3}) == (PipelineConfig().replace(head_epochs=3), {})
    weights_file = {"weights": "/models/mobilenet_v2_no_top.h5"}
    assert config_lib.from_user_settings(weights_file)[1] == {}
    demo = config_lib.demo_config()
    assert config_lib.from_user_settings({"weights": "none"}, demo) == (demo, {})


def test_a_base_kept_to_fewer_blocks_takes_a_fine_tune_layer_inside_it():
    short = PipelineConfig().replace(base_blocks=5, fine_tune_from=53)
    assert config_lib.base_layer_count(5, 1.0) == 54 and short.training.base_blocks == 5
    with pytest.raises(ConfigError, match=r"invalid fine_tune_from: must be below 54 \(MobileNetV2's base kept up "
                                          r"to block_5 has 54 layers"):
        PipelineConfig().replace(base_blocks=5)  # the default layer, 100, is past it
    with pytest.raises(ConfigError, match=r"got 100 \(no flag set it; set --fine-tune-from\)$"):
        config_lib.from_user_settings({"base_blocks": 5})
    with pytest.raises(ConfigError, match=r"kept up to expanded_conv has 9 layers.*got 30 \(no flag set it"):
        config_lib.from_user_settings({"base_blocks": 0}, config_lib.demo_config())
    assert PipelineConfig().replace(base_blocks=5, fine_tune_epochs=0).training.fine_tune_from == 100  # no phase 2


def test_a_narrow_base_counts_the_add_its_first_block_gets():
    # At a width of about 0.27 and below, expanded_conv's input and output round to the same channels and Keras gives
    # it a residual Add: one layer more in every base (tests/trainer/test_model.py checks against Keras' model).
    narrow = PipelineConfig().replace(weights="none", alpha=0.25, fine_tune_from=154)
    assert narrow.training.fine_tune_from == 154 and config_lib.base_layer_count(16, 0.25) == 155
    with pytest.raises(ConfigError, match=r"must be below 55 \(MobileNetV2's base kept up to block_5 has 55 layers"):
        PipelineConfig().replace(weights="none", alpha=0.25, base_blocks=5, fine_tune_from=55)
    with pytest.raises(ConfigError, match=r"must be below 154 \(MobileNetV2's whole base has 154 layers"):
        PipelineConfig().replace(weights="none", alpha=0.35, fine_tune_from=154)


def test_the_from_scratch_schedule_fills_its_layer_before_the_base_is_checked_and_names_itself_when_it_cannot():
    config, filled = config_lib.from_user_settings({"weights": "none", "base_blocks": 5})
    assert config.training.fine_tune_from == filled["fine_tune_from"] == 30  # the default 100 was never checked
    with pytest.raises(ConfigError) as error:
        config_lib.from_user_settings({"weights": "none", "base_blocks": 2})
    assert error.value.field == "fine_tune_from"
    assert str(error.value) == ("invalid fine_tune_from: must be below 27 (MobileNetV2's base kept up to block_2 has "
                                "27 layers; phase 2 would unfreeze none), got 30 (the from-scratch schedule's value "
                                "for random weights; set --fine-tune-from)")
    with pytest.raises(ConfigError, match="got 40$"):  # the user's own value: said as it is
        config_lib.from_user_settings({"weights": "none", "base_blocks": 2, "fine_tune_from": 40})
