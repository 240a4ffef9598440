"""Where a compiled pipeline runs, besides `run` on this machine: one module per target, found here.

`compile`, `submit` and `schedule` (cli.deploy) ask every target for its flags
and hand the command to the target the flags chose; nothing else names a
target. A target module provides (docs/architecture.md, "Adding a target"):

- NAME: its name; `compile --target NAME` when it compiles. HELP: what it is,
  in a few words.
- SELECTS: {command: (flag, argparse keywords)}: the flag of `submit` and
  `schedule` that picks it (one per command it offers; they exclude each other).
- add_flags(command, parser): its own flags of `command`, beside the ones
  every target shares (cli.deploy); a flag of another target is refused.
- compile(args, config), submit(args), schedule(args): each command it offers,
  returning the exit code. A command it does not offer is left out.
"""

from __future__ import annotations

from cli.targets import kubeflow, local, vertex

TARGETS = (kubeflow, vertex, local)  # the order of their flags in --help
COMMANDS = ("compile", "submit", "schedule")


def offering(command: str, targets=TARGETS) -> list:
    """The targets that offer `command`."""
    return [target for target in targets if callable(getattr(target, command.replace("-", "_"), None))]
