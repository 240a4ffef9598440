import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from config import TrainingConfig
from contract import layout
from tests.helpers import CHEAP_BASE_BLOCKS, CHEAP_FINE_TUNE_FROM
from trainer import model as model_lib
from trainer import task

SIZE = 64


def _examples(seed, n=16):
    """Unbatched (uint8 pixels, label) pairs, as the Trainer reads them."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    # Dogs brighter than cats: learnable in a couple of epochs.
    pixels = rng.uniform(0, 120, (n, SIZE, SIZE, 3)) + labels[:, None, None, None] * 120
    return tf.data.Dataset.from_tensor_slices((pixels.astype("uint8"), labels[:, None].astype("float32")))


def _batches(examples):
    return examples.batch(8).map(lambda pixels, label: (tf.cast(pixels, tf.float32), label))


@pytest.fixture(scope="module")
def config():
    return TrainingConfig(weights="none", alpha=0.35, base_blocks=CHEAP_BASE_BLOCKS, head_epochs=2, fine_tune_epochs=2,
                          fine_tune_from=CHEAP_FINE_TUNE_FROM, early_stopping_patience=0, seed=5, batch_size=8)


# Cached views keep the base's activations in float16: the eval loss the phases see is the full model's within
# that rounding.
@pytest.mark.parametrize("views,tolerance", [(0, 1e-4), (2, 2e-2)])
def test_train_records_both_phases_and_keeps_the_best_epoch(config, views, tolerance, monkeypatch, capsys):
    traces = []
    step = TensorFlowTrainer.train_step

    def counted(self, data):  # runs once for each trace of the training step, not once a step
        traces.append(self.name)
        return step(self, data)

    monkeypatch.setattr(TensorFlowTrainer, "train_step", counted)
    config = dataclasses.replace(config, cached_views=views)
    model, history = task.train(config, SIZE, _examples(0), _examples(1), calibration_pixels=None)
    # One trace a phase: an optimizer built inside the first step's trace makes TensorFlow trace it twice.
    assert len(traces) == 2, traces
    phases = [e["phase"] for e in history["epochs"]]
    assert phases == ["head", "head", "fine_tune", "fine_tune"]
    assert [e["epoch"] for e in history["epochs"]] == [0, 1, 2, 3]
    assert history["fine_tune_start_epoch"] == 2
    head_rate, tune_rate = history["epochs"][0]["learning_rate"], history["epochs"][-1]["learning_rate"]
    assert tune_rate == pytest.approx(head_rate * config.fine_tune_lr_factor)
    best = min(history["epochs"], key=lambda e: e["val_loss"])
    assert history["best_epoch"] == best["epoch"]
    model_lib.compile_model(model, config.learning_rate)  # with cached views, the phases compiled other models
    restored = model.evaluate(_batches(_examples(1)), verbose=0, return_dict=True)["loss"]
    assert restored == pytest.approx(best["val_loss"], rel=tolerance, abs=1e-5)
    assert history["cached_views"] == views
    if views:
        assert history["cache"]["views"] == 2 and history["cache"]["train_images"] == 16
        assert history["cache"]["eval_images"] == 16 and history["cache"]["location"] == "memory"
    else:
        assert history["cache"] is None
    # what the run's terminal shows of the Trainer: each phase as it starts, and the cache's one pass
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Trainer: ")]
    caching = ["Trainer: caching the frozen base's views of 16 training and 16 eval images (paid once, not every "
               "epoch)"] if views else []
    assert [line for line in said if "cached views ready in" not in line] == [
        *caching, f"Trainer: the head, the base frozen: epochs 1-2 at a learning rate of {head_rate:g}",
        f"Trainer: fine-tuning from layer {CHEAP_FINE_TUNE_FROM}: epochs 3-4 at a learning rate of {tune_rate:g}"]


def test_cached_views_leave_the_frozen_layers_as_they_were(config):
    """Everything below phase 2's first layer, and every BatchNorm statistic, is the same after training."""
    calibration = next(iter(_examples(3).batch(16)))[0].numpy().astype("float32")
    reference = model_lib.build_model(config, SIZE)
    model_lib.calibrate_batchnorm(reference, calibration)
    before = {v.path: v.numpy() for v in model_lib.get_base(reference).weights}
    model, _ = task.train(config, SIZE, _examples(0), _examples(1), calibration_pixels=calibration)
    base = model_lib.get_base(model)
    frozen = [v.path for index, layer in enumerate(base.layers) for v in layer.weights
              if index < config.fine_tune_from or isinstance(layer, keras.layers.BatchNormalization)]
    trained = [v.path for index, layer in enumerate(base.layers) for v in layer.trainable_weights
               if index >= config.fine_tune_from]
    assert frozen and trained
    after = {v.path: v.numpy() for v in base.weights}
    for path in frozen:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert any(not np.array_equal(after[path], before[path]) for path in trained)


def _save_classifier(classifier, folder):
    path = os.path.join(folder, layout.KERAS_MODEL_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    classifier.save(path)


def _calibrated_classifier(config, images):
    model = model_lib.build_model(config, SIZE)
    model_lib.calibrate_batchnorm(model, images)  # else random outputs are ~1e-10 and compare equal
    return model_lib.get_classifier(model)


def test_warm_start_copies_the_previous_models_weights(config, tmp_path):
    images = np.random.default_rng(2).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    previous = _calibrated_classifier(config, images)
    _save_classifier(previous, tmp_path)
    fresh = _calibrated_classifier(TrainingConfig(**{**config.__dict__, "seed": 99}), images)
    assert np.abs(fresh(images).numpy() - previous(images).numpy()).max() > 1e-3
    assert task.warm_start_from(fresh, str(tmp_path)) is None
    np.testing.assert_allclose(fresh(images).numpy(), previous(images).numpy(), rtol=1e-5, atol=1e-6)


def test_warm_start_refuses_another_architecture(config, tmp_path):
    _save_classifier(model_lib.get_classifier(model_lib.build_model(config, SIZE)), tmp_path)
    wider = model_lib.get_classifier(model_lib.build_model(TrainingConfig(**{**config.__dict__, "alpha": 0.5}), SIZE))
    assert "another architecture" in task.warm_start_from(wider, str(tmp_path))
    assert "does not exist" in task.warm_start_from(wider, str(tmp_path / "nothing"))


def test_a_phase_that_stops_early_says_so_before_the_next_phase_numbers_on(capsys):
    """At a learning rate of 0 the eval loss never improves: patience 1 stops the head after its second epoch, and
    the fine-tuning's epochs then start at 3, which the line in between explains."""
    config = TrainingConfig(weights="none", early_stopping_patience=1, fine_tune_from=7)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    data = tf.data.Dataset.from_tensor_slices((np.eye(4, dtype="float32"), np.array([[0.], [1.], [0.], [1.]])))
    phases = task._Phases(config, callbacks=[])
    for phase in ("head", "fine_tune"):
        phases.fit(model, 0.0, phase=phase, epochs=10, data=lambda first, epochs: (data.batch(2), data.batch(2), None))
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Trainer: ")]
    assert said == ["Trainer: the head, the base frozen: epochs 1-10 at a learning rate of 0",
                    "Trainer: the head, the base frozen: stopped after epoch 2 of 1-10: the eval loss had not improved "
                    "for 1 epoch (--early-stopping-patience)",
                    "Trainer: fine-tuning from layer 7: epochs 3-12 at a learning rate of 0",
                    "Trainer: fine-tuning from layer 7: stopped after epoch 4 of 3-12: the eval loss had not improved "
                    "for 1 epoch (--early-stopping-patience)"]
    assert [record["phase"] for record in phases.history] == ["head", "head", "fine_tune", "fine_tune"]
