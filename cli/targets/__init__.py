"""Where a compiled pipeline runs, besides `run` on this machine: one module per target, found here.

`compile`, `submit` and `schedule` (cli.deploy) ask every target for its flags
and hand the command to the target the flags chose; nothing else names a
target. A target module provides (docs/architecture.md, "Adding a target"):

- NAME: its name; `compile --target NAME` when it compiles. HELP: what it is,
  in a few words.
- SELECTS: {command: (flag, argparse keywords)}: the flag of `submit` and
  `schedule` that picks it (one per command it offers; they exclude each other).
- SETTINGS: {command: dataclass}: its own settings of each command it offers
  (none where it has none), fields made with contract.settings.setting: each
  becomes a flag with the field's help and default; the command reads them
  with cli.flags.settings_from. A flag of another target is refused.
- METADATA (when it compiles): what it needs from ML Metadata, as (kinds,
  default): the stores its package's tasks can share ("grpc", "sqlite": compile's
  --metadata-grpc, --metadata-sqlite) and the one it uses when none is given;
  ((), None): the engine keeps its own, and those flags are refused. compile
  finds the chosen store in args.metadata_store.
- add_flags(command, parser), if it needs it: flags a field cannot say (a
  group of their own, flags shared with other commands).
- compile(args, config), submit(args), schedule(args): each command it offers,
  returning the exit code. A command it does not offer is left out. A target
  whose engine is a service makes submit and schedule with cli.remote.commands.
"""

from __future__ import annotations

from cli.targets import kubeflow, local, vertex

TARGETS = (kubeflow, vertex, local)  # the order of their flags in --help
COMMANDS = ("compile", "submit", "schedule")


def offering(command: str, targets=TARGETS) -> list:
    """The targets that offer `command`."""
    return [target for target in targets if callable(getattr(target, command.replace("-", "_"), None))]
