"""Settings that are flags: a dataclass field says its own flag's help (and metavar or choices), once.

cli.flags makes --<field> of every field that has a help text, with the
field's default; the pipeline's settings (config), a deployment's (Kubeflow,
KServe) and each target's own (cli.targets) are all declared this way.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field that is a flag: its default, its help, and argparse's `metavar` or `choices` where
    they are given."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})
