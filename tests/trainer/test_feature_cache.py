import dataclasses
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from config import TrainingConfig
from trainer import feature_cache, task
from trainer import model as model_lib

SIZE = 64
CONFIG = TrainingConfig(weights="none", alpha=0.35, head_epochs=1, fine_tune_epochs=1, fine_tune_from=100,
                        early_stopping_patience=0, seed=3, batch_size=8, calibration_images=16)


@pytest.fixture(scope="module")
def base():
    return keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)


def _index(base, name):
    return [layer.name for layer in base.layers].index(name)


@pytest.mark.parametrize("first_trained,block_start", [
    ("block_11_depthwise", "block_11_expand"),  # the default, layer 100
    ("block_6_depthwise_relu", "block_6_expand"),  # the from-scratch schedule, layer 60
    ("block_11_add", "block_11_expand"),  # a residual add stays with the block it closes
    ("block_11_expand", "block_11_expand"),
    ("Conv_1", "Conv_1"),
])
def test_the_cut_is_the_start_of_the_block_holding_the_first_trained_layer(base, first_trained, block_start):
    assert feature_cache.cut_index(base, _index(base, first_trained)) == _index(base, block_start)


def test_below_and_above_the_cut_compute_the_base(base):
    model = model_lib.build_model(CONFIG, SIZE)
    model_lib.calibrate_batchnorm(model, _pixels(16, seed=1))
    parts = feature_cache.split(model, CONFIG)
    rescaled = model_lib.get_classifier(model).get_layer(model_lib.RESCALE_NAME)(_pixels(4, seed=2))
    whole = model_lib.get_base(model)(rescaled, training=False).numpy()
    assert np.abs(whole).max() > 1e-3  # calibrated: not a near-constant output
    np.testing.assert_allclose(parts.above(parts.below(rescaled, training=False), training=False).numpy(), whole,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 2, 16])  # block_2's output is a shortcut's Add; block_1's and the whole not
def test_without_phase_2_the_cut_is_below_the_bases_last_block_whatever_it_ends_in(blocks):
    config = TrainingConfig(weights="none", alpha=0.35, base_blocks=blocks, head_epochs=1, fine_tune_epochs=0)
    model = model_lib.build_model(config, SIZE)
    parts = feature_cache.split(model, config)
    rescaled = model_lib.get_classifier(model).get_layer(model_lib.RESCALE_NAME)(_pixels(2, seed=3))
    np.testing.assert_allclose(parts.above(parts.below(rescaled, training=False), training=False).numpy(),
                               model_lib.get_base(model)(rescaled, training=False).numpy(), rtol=1e-5, atol=1e-5)


def _pixels(n, seed):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _examples(n, seed):
    labels = (np.arange(n) % 2)[:, None].astype("float32")
    pixels = np.random.default_rng(seed).uniform(0, 120, (n, SIZE, SIZE, 3)) + labels[:, :, None, None] * 120
    return tf.data.Dataset.from_tensor_slices((pixels.astype("uint8"), labels))


def _epochs(cache, part, first, epochs, config):
    batches, steps = cache.training_epochs(part, first_epoch=first, epochs=epochs, config=config)
    assert steps == 2
    # tf.data's default rewrites would copy every in-memory view once per epoch that reads it
    assert batches.options().experimental_optimization.apply_default_optimizations is False
    return np.concatenate([features for features, _ in batches.as_numpy_iterator()]).reshape(epochs, 6, -1)


def _view_array(view, part):
    return np.stack([e[part] for e in view.as_numpy_iterator()]).astype("float32").reshape(6, -1)


def test_each_epoch_reads_one_view_or_a_blend_of_two_of_every_image():
    """Phase 1 reads the two views filled before it; phase 2 blends of all K, the others filled before it."""
    model = model_lib.build_model(CONFIG, SIZE)
    model_lib.calibrate_batchnorm(model, _pixels(16, seed=1))
    parts = feature_cache.split(model, CONFIG)
    # epochs 0-6 of the head and 7-9 fine-tuning: more epochs than views, so that every view is read
    config = dataclasses.replace(CONFIG, cached_views=3, batch_size=4, shuffle_buffer=1, head_epochs=7,
                                 fine_tune_epochs=3)
    cache = feature_cache.fill(model, parts, _examples(6, 1), _examples(4, 2), train_images=6, eval_images=4,
                               config=config, cache_dir=None)
    assert len(cache.train.views) == feature_cache.HEAD_VIEWS == 2
    pooled = [_view_array(view, feature_cache.POOLED) for view in cache.train.views]
    head = _epochs(cache, feature_cache.POOLED, 4, 3, config)
    for offset, epoch in enumerate(range(4, 7)):  # epoch e reads view e mod 2 (in order: shuffle_buffer=1)
        np.testing.assert_array_equal(head[offset], pooled[epoch % 2])
    assert not np.array_equal(head[0], head[1])  # the views differ: they are augmented independently

    head_bytes = cache.record()["bytes"]
    cache.fill_fine_tune_views()
    assert len(cache.train.views) == 3 and cache.record()["bytes"] > head_bytes
    cut = [_view_array(view, feature_cache.CUT) for view in cache.train.views]
    tune = _epochs(cache, feature_cache.CUT, 7, 3, config)
    weights = []
    for offset, epoch in enumerate(range(7, 10)):  # epoch e reads a blend of views e and e + 1 mod 3, per image
        first, second = cut[epoch % 3], cut[(epoch + 1) % 3]
        for image in range(6):
            direction = first[image] - second[image]
            weight = np.dot(tune[offset][image] - second[image], direction) / np.dot(direction, direction)
            np.testing.assert_allclose(tune[offset][image], weight * first[image] + (1 - weight) * second[image],
                                       atol=1e-5)
            weights.append(weight)
    assert all(0 <= weight < 1 for weight in weights) and len(np.unique(np.round(weights, 6))) == len(weights)
    np.testing.assert_array_equal(_epochs(cache, feature_cache.CUT, 7, 3, config), tune)  # the same blends again
    plain = _epochs(cache, feature_cache.CUT, 7, 3, dataclasses.replace(config, blend_views=False))
    for offset, epoch in enumerate(range(7, 10)):  # --no-blend-views: epoch e reads view e mod 3
        np.testing.assert_array_equal(plain[offset], cut[epoch % 3])
    assert not any(np.array_equal(cut[2], cut[index]) for index in (0, 1))
    record = cache.record()
    assert record["views"] == 3 and record["head_views"] == 2
    assert record["fill_seconds"] > record["fine_tune_fill_seconds"] > 0


@pytest.mark.parametrize("head,fine_tune,blend,asked,filled,head_views", [
    (1, 0, True, 4, 1, 1),  # one epoch reads one view: not four base passes for it
    (3, 0, True, 6, 3, 3),
    (1, 1, True, 6, 3, 1),  # epoch 1 blends views 1 and 2; view 0 is the only one phase 1 reads
    (1, 1, False, 6, 2, 1),
    (0, 2, True, 6, 3, 0),  # no phase 1: no view through the whole base
    (10, 10, True, 6, 6, 2),  # the default schedule reads all of them
    (2, 0, True, 1, 1, 1),
])
def test_only_the_views_the_epochs_read_are_filled(head, fine_tune, blend, asked, filled, head_views):
    config = dataclasses.replace(CONFIG, head_epochs=head, fine_tune_epochs=fine_tune, blend_views=blend,
                                 cached_views=asked)
    assert feature_cache.views_read(config) == (filled, head_views)
    # every view an epoch reads is the view it would read with all K filled: e mod (phase 1's views) in phase 1,
    # e mod K and (blended) e + 1 mod K in phase 2, for phase 1 stopped early after any of its epochs too
    fill_all = feature_cache.HEAD_VIEWS if fine_tune else asked
    assert all(epoch % head_views == epoch % min(asked, fill_all) for epoch in range(head))
    for ran in range(head + 1):
        for index in (i for epoch in range(ran, ran + fine_tune) for i in (epoch, epoch + blend)):
            assert index % filled == index % asked, (ran, index)


def test_a_training_without_phase_1_fills_no_view_through_the_whole_base():
    config = dataclasses.replace(CONFIG, head_epochs=0, fine_tune_epochs=2, cached_views=6)
    _, history = task.train(config, SIZE, _examples(8, 0), _examples(4, 1), calibration_pixels=None)
    assert [e["phase"] for e in history["epochs"]] == ["fine_tune", "fine_tune"]
    assert (history["cache"]["views"], history["cache"]["head_views"]) == (3, 0)


def test_a_one_epoch_training_fills_one_view_and_its_summary_says_of_how_many(capsys):
    from reporting import run_summary

    config = dataclasses.replace(CONFIG, head_epochs=1, fine_tune_epochs=0, cached_views=4)
    _, history = task.train(config, SIZE, _examples(8, 0), _examples(4, 1), calibration_pixels=None)
    assert history["cached_views"] == 4
    assert history["cache"]["views"] == history["cache"]["head_views"] == 1
    assert history["cache"]["bytes"] == (8 + 4) * feature_cache._element_bytes(
        feature_cache.split(model_lib.build_model(config, SIZE), config), pooled=True)
    assert "cached views 1 of 4 (as many as the epochs read; 0 MiB in memory" in run_summary.training_line(history)
    ready = [line for line in capsys.readouterr().out.splitlines() if "cached views ready in" in line]
    assert len(ready) == 1 and "fine-tuning" not in ready[0], ready  # there is no phase 2 to fill views for


def test_a_cache_over_the_memory_budget_goes_to_files_and_is_removed_after_training(tmp_path, capsys):
    config = dataclasses.replace(CONFIG, cache_memory_mb=0)
    cache_dir = tmp_path / "model_run" / task.CACHE_FOLDER
    seen = []

    class _Look(keras.callbacks.Callback):  # what lies in the cache folder while the phases train
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sorted(os.listdir(cache_dir)))

    _, history = task.train(config, SIZE, _examples(16, 0), _examples(8, 1), calibration_pixels=None,
                            cache_dir=str(cache_dir), extra_callbacks=[_Look()])
    assert history["cache"]["location"] == str(cache_dir)
    assert any(name.startswith("train") for name in seen[0]) and any(name.startswith("eval") for name in seen[0])
    notice = [line for line in capsys.readouterr().out.splitlines() if "memory budget" in line]
    assert len(notice) == 1 and "MiB are over the 0 MiB memory budget (--cache-memory-mb)" in notice[0]
    assert str(cache_dir) in notice[0]
    assert not cache_dir.exists()


@pytest.mark.faults
def test_a_full_disk_while_caching_fails_naming_it(tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        cache_dir = disk / task.CACHE_FOLDER
        with pytest.raises(feature_cache.FeatureCacheError, match="no space left on the disk of .*small-disk"):
            task.train(dataclasses.replace(CONFIG, cache_memory_mb=0), SIZE, _examples(64, 0), _examples(8, 1),
                       calibration_pixels=None, cache_dir=str(cache_dir))
        assert not cache_dir.exists()  # the next run starts clean
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_long_fill_says_how_far_it_has_come_at_most_every_interval(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(feature_cache.time, "monotonic", lambda: clock[0])
    tell = feature_cache._Tell("train images, head views", images=1000, passes=2)
    for step in range(1, 32):  # 64 images a batch, a batch every 5 s
        clock[0] = 5.0 * step
        tell(64)
    said = [line for line in capsys.readouterr().out.splitlines() if "caching train images" in line]
    assert said == [f"Trainer: caching train images, head views: {round(100 * n / 2000)}% ({n:,} of 2,000 image "
                    "views)" for n in (384, 768, 1152, 1536, 1920)], said
