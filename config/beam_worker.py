"""What a Beam worker process imports as it starts (`--beam_plugin`, config.beam_policy.WORKER_PLUGIN): the project's
Beam speed-ups in place before its first bundle, whose state sampler is built before any of the project's code is
unpickled there."""

from config import beam_policy

beam_policy.faster_beam()
