"""A module that logs as it loads, as TFMA does through absl (which configures the root logger when nothing has):
preloaded by a test's zygote."""

from absl import logging

logging.info("loaded")
