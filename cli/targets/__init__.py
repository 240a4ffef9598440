"""Where a compiled pipeline runs, besides `run` on this machine: one module per target, listed here.

`compile`, `submit` and `schedule` (cli.deploy) ask every target for its flags
and hand the command to the target the flags chose; nothing else names a
target, and no shared module imports one. A target module is a
cli.targets.base.Target (docs/architecture.md, "Adding a target"); the commands
it offers are its functions compile(args, config), submit(args) and
schedule(args), each returning the exit code; a command it does not offer is
left out.
"""

from __future__ import annotations

from cli.targets import base, kubeflow, local, vertex
from cli.targets.base import COMMANDS, Takes, Target

__all__ = ["COMMANDS", "TARGETS", "Takes", "Target", "offering"]

TARGETS: tuple[Target, ...] = (kubeflow, vertex, local)  # the order of their flags in --help


def offering(command: str, targets=TARGETS) -> list:
    """The targets that offer `command`; TypeError naming a target that lacks a member of Target."""
    for target in targets:
        if not isinstance(target, Target):
            raise TypeError(f"target {getattr(target, 'NAME', target)!r} lacks {', '.join(base.missing(target))}")
    return [target for target in targets if callable(getattr(target, command, None))]
