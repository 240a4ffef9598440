import dataclasses

import h5py
import keras
import numpy as np
import pytest

import config as config_lib
from config import TrainingConfig, mobilenet_v2
from trainer import model as model_lib

SIZE = 64


@pytest.fixture(scope="module")
def config():
    return TrainingConfig(weights="none", alpha=0.35, fine_tune_from=100, seed=3)


def _trainable_base_layers(model):
    return [i for i, layer in enumerate(model_lib.get_base(model).layers) if layer.trainable and layer.weights]


def test_phase_one_trains_only_the_head(config):
    model = model_lib.build_model(config, SIZE)
    assert _trainable_base_layers(model) == []
    trainable = {v.path.split("/")[-2] for v in model.trainable_weights}
    assert trainable == {model_lib.LOGITS_NAME}


def test_phase_one_with_hidden_layer_trains_it_too(config):
    model = model_lib.build_model(TrainingConfig(**{**config.__dict__, "hidden_units": 8}), SIZE)
    assert {v.path.split("/")[-2] for v in model.trainable_weights} == {"hidden", model_lib.LOGITS_NAME}


def test_phase_two_unfreezes_from_the_configured_layer_but_not_batchnorm(config):
    model = model_lib.build_model(config, SIZE)
    model_lib.unfreeze_for_fine_tuning(model, config.fine_tune_from)
    base = model_lib.get_base(model)
    trainable = _trainable_base_layers(model)
    assert trainable and min(trainable) >= config.fine_tune_from
    for index, layer in enumerate(base.layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, f"BatchNorm layer {layer.name} must stay frozen"
        elif index >= config.fine_tune_from and layer.weights:
            assert layer.trainable, f"layer {index} {layer.name} should be trainable in phase 2"
    assert not any(base.layers[i].trainable for i in range(config.fine_tune_from) if base.layers[i].weights)


def test_fine_tune_from_past_the_base_is_an_error(config):
    model = model_lib.build_model(config, SIZE)
    # the configuration refuses such values before any work, from its own count of the base's layers
    assert len(model_lib.get_base(model).layers) == config_lib.MOBILENET_V2_BASE_LAYERS
    with pytest.raises(ValueError, match="past the base"):
        model_lib.unfreeze_for_fine_tuning(model, 10_000)


def test_base_stays_in_inference_mode_while_training(config):
    """With training=True the model's base output must not depend on the batch."""
    model = model_lib.build_model(config, SIZE)
    model_lib.unfreeze_for_fine_tuning(model, 0)
    classifier = model_lib.get_classifier(model)
    pooled = keras.Model(classifier.input, classifier.get_layer("pool").output)
    images = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    alone = pooled(images[:1], training=True).numpy()
    in_batch = pooled(images, training=True).numpy()[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-4, atol=1e-5)


def test_calibration_gives_random_weights_a_usable_signal(config):
    model = model_lib.build_model(config, SIZE)
    classifier = model_lib.get_classifier(model)
    pooled = keras.Model(classifier.input, classifier.get_layer("pool").output)
    images = np.random.default_rng(1).uniform(0, 255, (16, SIZE, SIZE, 3)).astype("float32")
    before = pooled(images).numpy().std()
    model_lib.calibrate_batchnorm(model, images)
    after = pooled(images).numpy().std()
    assert after > 100 * before and after > 1e-3
    assert not model_lib.get_base(model).trainable, "calibration must leave the base frozen"


def test_missing_weights_file_is_a_clear_error(config, tmp_path):
    with pytest.raises(model_lib.WeightsUnavailableError, match="does not exist"):
        model_lib.build_model(TrainingConfig(**{**config.__dict__, "weights": str(tmp_path / "nope.h5")}), SIZE)


def _norm_statistics(model):
    """(moving mean, moving variance) of each BatchNorm layer of the base."""
    return [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in model_lib.get_base(model).layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_calibration_sets_the_same_statistics_run_eagerly_or_traced(config, monkeypatch):
    """A small pass runs eagerly (tracing costs more than it), a large one traced: one calibration either way, up
    to float32 rounding (the graph may sum in another order). A mean is compared on the scale of its channel's
    spread: a near-zero mean is noise of that scale in both."""
    images = np.random.default_rng(2).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    keras.utils.set_random_seed(3)
    eager = model_lib.build_model(config, SIZE)
    assert model_lib.eager_pass_fits(model_lib.get_base(eager), len(images))
    model_lib.calibrate_batchnorm(eager, images)
    keras.utils.set_random_seed(3)
    traced = model_lib.build_model(config, SIZE)
    monkeypatch.setattr(model_lib, "EAGER_PASS_BYTES", 0)
    model_lib.calibrate_batchnorm(traced, images)
    calibrated = _norm_statistics(traced)
    assert len(calibrated) > 30 and any(np.abs(mean).max() > 1e-2 for mean, _ in calibrated), "not calibrated"
    for (mean, variance), (graph_mean, graph_variance) in zip(_norm_statistics(eager), calibrated, strict=True):
        np.testing.assert_allclose(variance, graph_variance, rtol=1e-3, atol=1e-6)
        assert np.all(np.abs(mean - graph_mean) <= 1e-3 * np.sqrt(graph_variance) + 1e-6)


def test_a_search_calibrates_one_base_on_one_sample_once_and_sets_the_same_statistics_after(config):
    """Given a search's Calibrations, a base with the same weights and settings calibrated on the same pixels gets
    the statistics the first pass computed; another sample, another base, a BatchNorm's epsilon or the rescaling
    before the base changed: passed through again."""
    images = np.random.default_rng(2).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    short = dataclasses.replace(config, base_blocks=2, fine_tune_from=1)  # any base; a short one builds in a third

    def calibrated(seed, pixels, kept=None, change=lambda model: None):
        keras.utils.set_random_seed(seed)
        model = model_lib.build_model(dataclasses.replace(short, seed=seed), SIZE)
        change(model)
        model_lib.calibrate_batchnorm(model, pixels, kept)
        return _norm_statistics(model)

    outside = calibrated(3, images)
    kept = model_lib.Calibrations()
    first = calibrated(3, images, kept)
    assert (len(kept), kept.reused) == (1, 0)
    again = calibrated(3, images, kept)
    assert (len(kept), kept.reused) == (1, 1)
    other_sample = calibrated(3, images[::-1].copy(), kept)
    other_base = calibrated(4, images, kept)
    assert (len(kept), kept.reused) == (3, 1)
    for change in (lambda model: setattr(model_lib.get_base(model).get_layer("bn_Conv1"), "epsilon", 10.0),
                   lambda model: setattr(model_lib.get_classifier(model).get_layer(model_lib.RESCALE_NAME), "offset",
                                         0.0)):
        calibrated(3, images, kept, change)
    assert (len(kept), kept.reused) == (5, 1)
    # The same pass on the same weights and pixels in one process: the same bits; reused, the very values.
    for statistics in (first, again):
        for (mean, variance), (expected_mean, expected_variance) in zip(statistics, outside, strict=True):
            np.testing.assert_array_equal(mean, expected_mean)
            np.testing.assert_array_equal(variance, expected_variance)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(other_base, outside))
    # the images in another order: the same batch statistics up to float32's summation order
    for (mean, _), (expected_mean, expected_variance) in zip(other_sample, outside, strict=True):
        assert np.all(np.abs(mean - expected_mean) <= 1e-3 * np.sqrt(expected_variance) + 1e-6)


def test_inference_logits_are_predicts_whether_run_eagerly_or_through_predict(config, monkeypatch):
    model = model_lib.build_model(config, SIZE)
    images = np.random.default_rng(4).uniform(0, 255, (6, SIZE, SIZE, 3)).astype("float32")
    model_lib.calibrate_batchnorm(model, images)  # else every logit is about the same
    classifier = model_lib.get_classifier(model)
    eager = model_lib.inference_logits(classifier, images)
    monkeypatch.setattr(model_lib, "EAGER_PASS_BYTES", 0)
    through_predict = model_lib.inference_logits(classifier, images)
    assert eager.shape == through_predict.shape == (6, 1) and np.ptp(eager) > 1e-3
    np.testing.assert_allclose(eager, through_predict, rtol=1e-4, atol=1e-4 * np.abs(through_predict).max())


def test_a_pass_too_large_or_of_unknown_size_is_not_run_eagerly(config):
    base = model_lib.get_base(model_lib.build_model(config, SIZE))
    assert model_lib.eager_pass_fits(base, 1) and not model_lib.eager_pass_fits(base, 100_000)
    any_size = keras.applications.MobileNetV2(input_shape=(None, None, 3), include_top=False, weights=None,
                                              alpha=0.35)
    assert not model_lib.eager_pass_fits(any_size, 1)


@pytest.mark.parametrize("alpha", [0.35, 0.25, 0.05])  # the common count; expanded_conv's Add; block_10's too
def test_a_base_kept_to_n_blocks_ends_after_keras_block_n_with_the_layers_the_configuration_counts(alpha):
    keras_base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None,
                                                alpha=alpha)
    names = [layer.name for layer in keras_base.layers]
    ends = [1 + max(i for i, name in enumerate(names) if name.startswith(f"block_{n}_" if n else "expanded_conv_"))
            for n in range(config_lib.MOBILENET_V2_BLOCKS + 1)]
    assert tuple(ends) == mobilenet_v2.layers_to_block(alpha)
    assert ends[:-1] == [config_lib.base_layer_count(n, alpha) for n in range(config_lib.MOBILENET_V2_BLOCKS)]
    assert len(names) == config_lib.base_layer_count(16, alpha)
    assert [mobilenet_v2.has_add(n, alpha) for n in range(config_lib.MOBILENET_V2_BLOCKS + 1)] == \
        [any(name == (f"block_{n}_add" if n else "expanded_conv_add") for name in names)
         for n in range(config_lib.MOBILENET_V2_BLOCKS + 1)]
    for blocks, last in [(0, "expanded_conv_add" if alpha < 0.28 else "expanded_conv_project_BN"), (2, "block_2_add"),
                         (16, "out_relu")]:
        base = model_lib.build_base(TrainingConfig(weights="none", alpha=alpha, base_blocks=blocks, fine_tune_from=1),
                                    SIZE)
        assert base.name == model_lib.BASE_NAME and base.layers[-1].name == last
        # (an Input layer's name differs from model to model)
        assert [layer.name for layer in base.layers][1:] == names[1:config_lib.base_layer_count(blocks, alpha)]
    assert config_lib.MOBILENET_V2_BASE_LAYERS == config_lib.base_layer_count(16, 1.0) == 154


def _weights_by_layer(base):
    return {layer.name: [w.numpy() for w in layer.weights] for layer in base.layers if layer.weights}


def test_a_shorter_base_loads_the_whole_bases_file_and_its_own_file_loads_only_as_short_or_shorter(tmp_path):
    def config(blocks, weights="none", seed=0):
        return TrainingConfig(weights=weights, alpha=0.35, base_blocks=blocks, fine_tune_from=1, seed=seed)

    def same(file_base, base):
        theirs, mine = _weights_by_layer(file_base), _weights_by_layer(base)
        return len(mine) > 0 and all(np.array_equal(a, b) for name in mine for a, b in zip(mine[name], theirs[name]))

    whole, short = model_lib.build_classifier(config(16, seed=1), SIZE), model_lib.build_classifier(config(3, seed=2),
                                                                                                      SIZE)
    model_lib.save_base_weights(whole, str(tmp_path / "whole.h5"))
    model_lib.save_base_weights(short, str(tmp_path / "short.h5"))
    assert same(model_lib.get_base(whole), model_lib.build_base(config(3, str(tmp_path / "whole.h5")), SIZE))
    for blocks in (2, 3):
        loaded = model_lib.build_base(config(blocks, str(tmp_path / "short.h5")), 96)  # any image size
        assert same(model_lib.get_base(short), loaded) and not same(model_lib.get_base(whole), loaded)
    for blocks in (4, 16):
        with pytest.raises(model_lib.WeightsUnavailableError) as error:
            model_lib.build_base(config(blocks, str(tmp_path / "short.h5")), SIZE)
        assert str(error.value) == (f"weights file '{tmp_path / 'short.h5'}' holds MobileNetV2's base kept up to "
                                    f"block_3 (a model trained with --base-blocks 3): it loads with --base-blocks 3 "
                                    f"or fewer, not {blocks}")
    # A file of another network (MobileNet v1's layers have other names) is named as such, at any depth.
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["layer_names"] = [b"conv1", b"conv1_bn", b"conv_dw_1"]
    for blocks in (2, 16):
        with pytest.raises(model_lib.WeightsUnavailableError, match=r"other\.h5' is not of MobileNetV2's base: it "
                                                                    r"has no layer Conv1$"):
            model_lib.build_base(config(blocks, str(tmp_path / "other.h5")), SIZE)
    # Keras 3's own format of a shorter base: Keras' loader refuses it, in the first line of its long explanation.
    model_lib.get_base(short).save_weights(str(tmp_path / "short.weights.h5"))
    with pytest.raises(model_lib.WeightsUnavailableError) as error:
        model_lib.build_base(config(3, str(tmp_path / "short.weights.h5")), SIZE)
    assert "short.weights.h5" in str(error.value) and "\n" not in str(error.value)
    # A whole base's file that lists only its layers with weights (the legacy loader skips the others) is whole.
    with h5py.File(tmp_path / "whole.h5", "r+") as f:
        f.attrs["layer_names"] = [name for name in f.attrs["layer_names"] if len(f[name].attrs["weight_names"])]
    for blocks in (3, 16):
        assert same(model_lib.get_base(whole), model_lib.build_base(config(blocks, str(tmp_path / "whole.h5")), SIZE))
