import json
import subprocess
import sys
import textwrap

import pytest

from contract import accelerators
from tests.helpers import ROOT
from trainer import devices

# Two logical CPU devices stand in for two GPUs: MirroredStrategy splits each batch between them and
# all-reduces the gradients exactly as it would across GPUs. It needs a fresh process (devices are
# configured before TensorFlow starts). The base and layer of tests.helpers' CHEAP_TRAINING, cheaper to trace.
_TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from config import TrainingConfig
    from trainer import devices, task
    from trainer import model as model_lib

    def examples(seed, n=16):
        labels = (np.arange(n) % 2)[:, None].astype("float32")
        pixels = np.random.default_rng(seed).uniform(0, 120, (n, 64, 64, 3)) + labels[:, :, None, None] * 120
        return tf.data.Dataset.from_tensor_slices((pixels.astype("uint8"), labels))

    strategy = devices.strategy(["/cpu:0", "/cpu:1"])
    calibration = next(iter(examples(3).batch(16)))[0].numpy().astype("float32")
    records = {}
    for views in json.loads(sys.argv[1]):
        config = TrainingConfig(weights="none", alpha=0.35, base_blocks=2, head_epochs=2, fine_tune_epochs=1,
                                fine_tune_from=18, early_stopping_patience=0, batch_size=8, seed=2, cached_views=views)
        model, history = task.train(config, 64, examples(0), examples(1), calibration, strategy=strategy)
        logits = model_lib.get_classifier(model)(calibration).numpy()
        records[views] = {"devices": history["devices"], "replicas": strategy.num_replicas_in_sync,
                          "losses": [e["loss"] for e in history["epochs"]], "logit_spread": float(logits.std())}
    print(json.dumps(records))
""")


@pytest.fixture(scope="module")
def mirrored():
    """Both trainings (with and without cached views) in one fresh process: TensorFlow starts once."""
    result = subprocess.run([sys.executable, "-c", _TWO_DEVICES, json.dumps([2, 0])], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    return result


@pytest.mark.e2e
@pytest.mark.parametrize("views", [2, 0])
def test_training_is_mirrored_over_two_devices(mirrored, views):
    result = mirrored
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])[str(views)]
    assert record["replicas"] == 2
    assert [device.lower() for device in record["devices"]] == ["/job:localhost/replica:0/task:0/device:cpu:0",
                                                                 "/job:localhost/replica:0/task:0/device:cpu:1"]
    assert len(record["losses"]) == 3 and all(loss == loss for loss in record["losses"])  # no NaN
    assert record["logit_spread"] > 0  # a model came out, not a constant


def _visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def test_one_device_trains_without_a_distribution_strategy():
    assert devices.strategy([]) is devices.strategy(["/cpu:0"])  # the default strategy, shared
    # the default strategy's device: the first GPU TensorFlow sees, else the CPU
    expected = "gpu:0" if _visible_gpus() else "cpu:0"
    assert devices.training_devices(devices.strategy([]))[0].lower().endswith(expected)


def test_a_task_given_gpus_that_tensorflow_cannot_see_fails_in_one_line():
    devices.check_requested({})  # nothing asked, nothing checked
    seen = _visible_gpus()
    if seen:  # as many as it sees: nothing to say
        devices.check_requested({accelerators.ACCELERATOR_ENV: "nvidia.com/gpu",
                                 accelerators.ACCELERATOR_COUNT_ENV: str(seen)})
    with pytest.raises(devices.AcceleratorUnavailableError) as raised:
        devices.check_requested({accelerators.ACCELERATOR_ENV: "nvidia.com/gpu",
                                 accelerators.ACCELERATOR_COUNT_ENV: str(seen + 4)})
    message = str(raised.value)
    assert "\n" not in message
    assert f"asked for {seen + 4} nvidia.com/gpu but TensorFlow sees {seen} GPU(s)" in message
    assert "VARIANT=gpu" in message
