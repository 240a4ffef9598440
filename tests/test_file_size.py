"""Each module of the project does one job, small enough to read in one sitting: at most MAX_LINES lines, and a
docstring that says what it is for. A module that outgrows the bound is split by job, not squeezed."""

import ast

import pytest

from tests.helpers import ROOT, project_packages

MAX_LINES = 400


def _modules():
    """Every shipped module and every benchmark, as paths relative to the checkout."""
    packages = project_packages() - {"pipeline_runner"} | {"benchmarks"}
    files = [ROOT / "pipeline_runner.py"] + [path for name in sorted(packages) for path in (ROOT / name).rglob("*.py")]
    return sorted(str(path.relative_to(ROOT)) for path in files)


@pytest.mark.parametrize("module", _modules())
def test_a_module_is_at_most_400_lines_and_says_its_job(module):
    text = (ROOT / module).read_text()
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by job (at most {MAX_LINES})"
    if module.endswith("__init__.py") and not text.strip():
        return
    assert ast.get_docstring(ast.parse(text)), f"{module}: no docstring saying what the module is for"


def test_the_bound_sees_every_package():
    seen = {module.split("/")[0] for module in _modules()}
    assert seen >= {"contract", "orchestration", "trainer", "reporting", "benchmarks", "pipeline_runner.py"}, seen
