"""What a target module provides (cli.targets lists them), written as a type, as TFX's CLI writes an engine's
handler (tfx/tools/cli/handler/base_handler.py)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Protocol, runtime_checkable

COMMANDS = ("compile", "submit", "schedule")  # what a target may offer


@dataclasses.dataclass(frozen=True)
class Takes:
    """How a target takes one of the flags its command shares with the other targets (cli.deploy.SHARED)."""

    note: str = ""  # what the flag is for this target, added to the flag's help after its name
    needs: str = ""  # when set, the target needs the flag, and why: "--target NAME needs --flag (needs)"


@runtime_checkable
class Target(Protocol):
    """What a target module provides, as TFX's CLI asks of an engine's handler (tools/cli/handler/base_handler).

    - NAME: its name; `compile --target NAME` when it compiles. HELP: what it is, in a few words.
    - ABOUT: {command: what the command does on this target}: a sentence of the command's description.
    - SELECTS: {command: (flag, argparse keywords)}: the flag of `submit` and `schedule` that picks it (one per
      command it offers; they exclude each other).
    - SETTINGS: {command: dataclass}: its own settings of each command it offers ({} where it has none), fields
      made with contract.settings.setting: each becomes a flag with the field's help and default; the command
      reads them with cli.flags.settings. A flag of another target is refused, naming its target.
    - SHARED: {command: {flag: Takes}}: which of the command's shared flags (cli.deploy.SHARED) it reads, and
      those it needs. A shared flag it does not read is refused when given; one it needs, when missing.
    - METADATA (read when it compiles): what it needs from ML Metadata, as (kinds, default): the stores its
      package's tasks can share ("grpc", "sqlite": compile's --metadata-grpc, --metadata-sqlite) and the one
      it uses when none is given; ((), None): the engine keeps its own, and those flags are refused. compile
      finds the chosen store in args.metadata_store.
    - add_flags(command, parser): flags a settings field cannot say (a group of their own, the shared
      definitions of cli.flags); a function that adds nothing where it has none.
    - check_package(package, arguments): refuses, in one line, a file that submit or schedule was given that
      is not a package of this target, or run parameters (`arguments`, from --data-dir and --source-kind) the
      package does not take.
    """

    NAME: str
    HELP: str
    ABOUT: dict[str, str]
    SELECTS: dict[str, tuple[str, dict]]
    SETTINGS: dict[str, type]
    SHARED: dict[str, dict[str, Takes]]
    METADATA: tuple[tuple[str, ...], str | None]

    def add_flags(self, command: str, parser: argparse.ArgumentParser) -> None: ...

    def check_package(self, package: str, arguments: dict) -> None: ...



def missing(target) -> list[str]:
    """The members of Target that `target` lacks."""
    members = set(Target.__annotations__) | {name for name, value in vars(Target).items()
                                             if callable(value) and not name.startswith("_")}
    return sorted(name for name in members if not hasattr(target, name))
