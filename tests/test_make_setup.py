"""`make setup` (what `make test` runs first): the venv and the Debian packages, side by side."""

import os
import shutil
import subprocess

from tests.helpers import ROOT

# As from a shell: under `make test` the tests inherit its MAKELEVEL and MAKEFLAGS, which make a `make` a sub-make
# (it then names the directory it enters) and pass on the caller's flags.
SHELL_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}


def test_a_wrong_python_stops_setup_before_apt_or_the_venv_start(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    wrong = tmp_path / "python"
    wrong.write_text("#!/bin/sh\necho 'Python 3.11 required, this one is 3.12' >&2\nexit 1\n")
    wrong.chmod(0o755)
    done = subprocess.run(["make", "setup", f"PYTHON={wrong}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=SHELL_ENV)
    assert done.returncode != 0 and "Python 3.11 required" in done.stderr, done
    assert "installed" not in done.stdout + done.stderr and not (tmp_path / ".venv").exists(), done


def test_setup_with_both_in_place_does_nothing_and_says_nothing():
    # `make test` ran it before this test: the venv is installed and the packages are there
    done = subprocess.run(["make", "setup"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=SHELL_ENV)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done


def test_clean_removes_what_the_project_wrote_and_keeps_a_root_of_the_users(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    written = [".venv/bin/python", "runs/demo/metadata.sqlite", "runs/benchmarks.json", "runs/test-cpu.jsonl",
               "runs/scale.json", "runs/drift.json"]
    own = ["runs/pets/metadata.sqlite", "runs/pets/serving_model/1/saved_model.pb", "runs/notes.txt", "runs/pets.json",
           "runs/a b.json", "runs/notes.jsonl", "runs/demo-mine/metadata.sqlite", "runs/pretrained/base.h5"]
    for name in written + own:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    done = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=SHELL_ENV)
    assert done.returncode == 0, done
    assert [name for name in written if (tmp_path / name).exists()] == []
    assert [name for name in own if (tmp_path / name).read_text() != name] == []
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "runs/demo").exists()
