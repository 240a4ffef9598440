"""Where the Trainer trains: every GPU TensorFlow sees, and a clear failure when an asked-for one is missing."""

from __future__ import annotations

import os

import tensorflow as tf

from contract import accelerators
from contract.errors import RunFailedError


class AcceleratorUnavailableError(RunFailedError, RuntimeError):
    """The task asked for accelerators that TensorFlow cannot see."""


def check_requested(environ=os.environ) -> None:
    """Fails when the deployment gave this task accelerators (contract.accelerators) that TensorFlow does not
    see: training would silently fall back to the CPU."""
    kind = environ.get(accelerators.ACCELERATOR_ENV)
    if not kind:
        return
    wanted = int(environ.get(accelerators.ACCELERATOR_COUNT_ENV) or 1)
    seen = len(tf.config.list_physical_devices("GPU"))
    if seen < wanted:
        raise AcceleratorUnavailableError(
            f"the Trainer's task asked for {wanted} {kind} but TensorFlow sees {seen} GPU(s): the image lacks the "
            "CUDA libraries (build it with --build-arg VARIANT=gpu) or the node has no driver for them")


def strategy(devices: list[str] | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over `devices` (default: the visible GPUs) when there are two or more, else the
    default strategy (one device)."""
    if devices is None:
        devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def training_devices(chosen: tf.distribute.Strategy) -> list[str]:
    """The devices the strategy trains on, for the history and the run summary."""
    if isinstance(chosen, tf.distribute.MirroredStrategy):
        return list(chosen.extended.worker_devices)
    gpus = tf.config.list_logical_devices("GPU")
    return [gpus[0].name if gpus else tf.config.list_logical_devices("CPU")[0].name]
