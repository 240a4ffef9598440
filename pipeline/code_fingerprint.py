"""The code fingerprint: a hash of the project code that TFX runs by module path.

TFX's cache key covers a component's inputs and parameters but not the code it
loads by module path (Transform's preprocessing_fn, the Trainer's run_fn, the
Tuner's tuner_fn, the custom components and resolver strategies). Transform,
Tuner, Trainer and the custom components get this fingerprint as a parameter,
so a change to any code they run is a cache miss, and a change anywhere else
(the README, the CLI) is not.
"""

from __future__ import annotations

import ast
import hashlib
import pathlib

# What TFX runs from this project by module path, which its cache key does not see into: Transform's
# preprocessing_fn, the Trainer's run_fn, the Tuner's tuner_fn (its search space: a change is a new search) and
# the custom components and resolver strategies.
CODE_ENTRY_POINTS = ("trainer.preprocessing", "trainer.task", "trainer.tuning", "components.anomalies_gate",
                     "components.serving_pusher", "components.baseline_resolver", "components.tuner")
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module_files(root: pathlib.Path, module: str) -> list[pathlib.Path]:
    """The file of `module` and the __init__.py of each package it is in (importing it runs them all)."""
    parts = module.split(".")
    files = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    files.append(root.joinpath(*parts[:-1], parts[-1] + ".py"))
    return [f for f in files if f.is_file()]


def _imports(path: pathlib.Path) -> set[str]:
    """Every module named by an import anywhere in the file (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def code_files(entry_points: tuple[str, ...] = CODE_ENTRY_POINTS, root: pathlib.Path = PROJECT_ROOT
               ) -> list[pathlib.Path]:
    """The project's files that the entry points run: their modules and every project module they import."""
    seen: set[pathlib.Path] = set()
    pending = list(entry_points)
    while pending:
        for path in _module_files(root, pending.pop()):
            if path not in seen:
                seen.add(path)
                pending += [name for name in _imports(path) if (root / name.split(".")[0] / "__init__.py").is_file()]
    return sorted(seen)


def code_fingerprint(root: pathlib.Path = PROJECT_ROOT) -> str:
    """Hash of code_files' paths and contents."""
    digest = hashlib.sha256()
    for path in code_files(root=root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
