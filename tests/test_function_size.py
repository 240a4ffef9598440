"""No function of the shipped source is longer than a screen: past 80 lines, a function does several jobs."""

import ast

from tests.helpers import ROOT, project_packages

MAX_LINES = 80


def test_no_source_function_is_over_80_lines():
    packages = project_packages()
    files = [ROOT / "pipeline_runner.py"] + [p for name in packages - {"pipeline_runner"}
                                             for p in (ROOT / name).rglob("*.py")]
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in files for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert files and long == []
