"""Imports between the project's packages flow one way: from the data contract at the bottom up to the CLI.

Every import counts, including those inside functions: a deferred import still
ties the two packages together.
"""

import ast
import subprocess
import sys

import pytest

from tests.helpers import ROOT, project_packages

# Lowest first. A package may import packages of lower layers only (and itself).
LAYERS = (
    ("contract",),  # feature keys, label names, where stored things live
    ("config",),  # the typed settings
    ("traffic",),  # served traffic: its records and spans, and the sink that records KServe's logger
    ("ingest", "trainer"),  # data in; the model code TFX loads by module path
    ("components", "inference"),  # TFX nodes; using a pushed model
    ("pipeline",),  # create_pipeline and the blessing rule
    ("reporting",),  # summary, report and model history, read from ML Metadata
    ("monitoring",),  # served traffic against the served model's data: drift, its report, the labeling queue
    ("orchestration",),  # running it: the root's keeping, the run's lifecycle, serving, one runner per orchestrator
    ("cli",),  # the commands, one module per group
    ("pipeline_runner",),  # the entry point: parser and dispatch
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
# orchestration's parts, lowest first, layered the same way: the engines and the serving operations use the root's
# keeping and the run's lifecycle; the root's keeping uses none of the others.
ORCHESTRATION_PARTS = (
    "root",  # the lease, the marker, the settings a root's runs were given, its store's health
    "run",  # the steps around the DAG; the serving folder and ML Metadata kept in agreement
    "serving",  # KServe and rollback
    "engines",  # one runner per orchestrator
)


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_between_modules(packages=None) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> ["file:line", ...] for every import of one project module by another (of
    `packages`, default the shipped ones): `from package import module` counts as importing that module."""
    packages = packages or project_packages()
    files = [ROOT / "pipeline_runner.py"] + [p for name in packages - {"pipeline_runner"}
                                             for p in (ROOT / name).rglob("*.py")]
    modules = {_module_name(path) for path in files}
    edges: dict[tuple[str, str], list[str]] = {}
    for path in files:
        importer = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names]
            else:
                continue
            for name in names:
                if name in modules and name != importer:
                    edges.setdefault((importer, name), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return edges


def _imports_between_packages() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) -> ["file:line", ...] for every import of one project package by another."""
    edges: dict[tuple[str, str], list[str]] = {}
    for (importer, imported), where in _imports_between_modules().items():
        importer, imported = importer.split(".")[0], imported.split(".")[0]
        if importer != imported:
            edges.setdefault((importer, imported), []).extend(where)
    return edges


def _cycles(edges) -> list[list[str]]:
    """The strongly connected groups of more than one package (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        graph.setdefault(importer, set()).add(imported)
        graph.setdefault(imported, set())
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): []}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"): [], ("b", "c"): []}) == []


@pytest.mark.parametrize("edges", [_imports_between_packages, lambda: _imports_between_modules(
    project_packages() | {"benchmarks"})], ids=["packages", "modules"])
def test_no_import_cycles(edges):
    edges = edges()
    cycles = _cycles(edges)
    detail = [f"{a} -> {b}: {', '.join(where)}" for (a, b), where in sorted(edges.items())
              if any(a in group and b in group for group in cycles)]
    assert not cycles, f"import cycles {cycles}:\n" + "\n".join(detail)


def test_every_package_has_a_layer_and_imports_only_lower_layers():
    assert project_packages() == set(RANK), "place new packages in LAYERS"
    upward = [f"{a} (layer {RANK[a]}) imports {b} (layer {RANK[b]}): {', '.join(where)}"
              for (a, b), where in sorted(_imports_between_packages().items()) if RANK[b] >= RANK[a]]
    assert not upward, "\n".join(upward)


def test_every_orchestration_module_is_in_a_part_and_imports_only_lower_parts():
    modules = {_module_name(path) for path in (ROOT / "orchestration").rglob("*.py")} - {"orchestration"}
    outside = sorted(m for m in modules if m.split(".")[1] not in ORCHESTRATION_PARTS)
    assert not outside, f"place these in one of orchestration's parts {ORCHESTRATION_PARTS}: {outside}"
    rank = {part: index for index, part in enumerate(ORCHESTRATION_PARTS)}
    upward = [f"{a} imports {b}: {', '.join(where)}" for (a, b), where in sorted(_imports_between_modules().items())
              if a in modules and b in modules and rank[b.split(".")[1]] > rank[a.split(".")[1]]]
    assert not upward, "\n".join(upward)


def test_the_contract_imports_nothing_heavy():
    probe = ("import sys, contract.features, contract.layout\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'tensorflow', 'tfx', 'apache_beam', 'numpy', 'PIL', 'config', 'trainer', 'ingest'}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
