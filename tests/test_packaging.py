"""The wheel built from the project holds every module a pipeline task imports.

Kubeflow tasks import the installed package from an arbitrary working
directory. This runs the Dockerfile's own install steps
(container/install_project.sh, then container/check_imports.py) into a
folder of its own, from a copy of the project, in a working directory
elsewhere.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, project_packages


@pytest.mark.e2e
def test_the_dockerfile_installs_a_wheel_with_every_task_module_and_the_schema(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "container/install_project.sh /tmp/src" in dockerfile and "container/check_imports.py" in dockerfile
    source, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    # Built from a copy, so the build leaves nothing in the checkout; without the caches other test processes
    # write meanwhile (Hypothesis replaces its files: one listed, then gone, would fail the copy).
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info",
                                                                "__pycache__", "tests", ".hypothesis",
                                                                ".pytest_cache", ".ruff_cache"))
    environment = dict(os.environ, WHEEL_OPTIONS="--no-build-isolation",
                       PATH=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}")
    install = subprocess.run(["sh", str(source / "container" / "install_project.sh"), str(source), "--target",
                              str(site)], cwd=elsewhere, capture_output=True, text=True, env=environment)
    assert install.returncode == 0, install.stderr[-2000:]
    check = subprocess.run([sys.executable, str(source / "container" / "check_imports.py")], cwd=elsewhere,
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="3"))
    assert check.returncode == 0, check.stderr[-2000:]
    files = json.loads(check.stdout.strip().splitlines()[-1])
    outside = {m: f for m, f in files.items() if not pathlib.Path(f).is_relative_to(site)}
    assert not outside, f"imported from outside the installed wheel: {outside}"
    installed = {p.name.removesuffix(".py") for p in site.iterdir() if (p / "__init__.py").is_file() or
                 p.suffix == ".py"}
    assert project_packages() <= installed, "packages missing from the wheel (setup.py PACKAGES)"
    assert (site / "pipeline" / "schema" / "schema.pbtxt").is_file()
    assert (site / "reporting" / "templates" / "report.html.j2").is_file()
    # The console script: an installed copy is a command.
    command = subprocess.run([str(site / "bin" / "cats-vs-dogs"), "models", "--help"], cwd=elsewhere,
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(site)))
    assert command.returncode == 0 and "--output-dir" in command.stdout, command.stderr[-2000:]
    # Its help names it as it was started: `cats-vs-dogs ...`, not the script the examples would otherwise name.
    command = subprocess.run([str(site / "bin" / "cats-vs-dogs"), "--help"], cwd=elsewhere, capture_output=True,
                             text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(site)))
    assert command.stdout.startswith("usage: cats-vs-dogs ") and "cats-vs-dogs run --demo" in command.stdout
    assert "pipeline_runner.py" not in command.stdout, command.stdout


def test_the_gpu_images_cuda_libraries_are_what_the_locked_tensorflow_asks_for():
    """requirements/lock-gpu.txt pins every package of tensorflow[and-cuda] at the version the installed (locked)
    TensorFlow requires, and the Dockerfile installs it for VARIANT=gpu only."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = [Requirement(r) for r in metadata.requires("tensorflow")]
    wanted = {r.name: r.specifier for r in wanted if r.marker and r.marker.evaluate({"extra": "and-cuda"})
              and not r.marker.evaluate({"extra": ""})}
    assert wanted, "the installed TensorFlow declares no and-cuda extra"
    lines = (ROOT / "requirements" / "lock-gpu.txt").read_text().splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert set(pinned) == set(wanted)
    for name, specifier in wanted.items():
        assert pinned[name] in specifier, (name, pinned[name], str(specifier))
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile
    assert 'if [ "$VARIANT" = gpu ]; then pip install --no-deps -r /tmp/lock-gpu.txt' in dockerfile
