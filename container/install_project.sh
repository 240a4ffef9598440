#!/bin/sh
# Installs the project from its source folder as a wheel, the way the container image has it
# (see Dockerfile): not an editable checkout, so a task imports every module from site-packages
# whatever its working directory. tests/test_packaging.py runs this same script.
#
# Usage: install_project.sh SOURCE_DIR [pip install options, e.g. --target DIR]
# WHEEL_OPTIONS: extra options of `pip wheel` (e.g. --no-build-isolation offline).
set -eu
source_dir=$1
shift
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
# shellcheck disable=SC2086  # WHEEL_OPTIONS is a list of options
python -m pip wheel --no-deps ${WHEEL_OPTIONS:-} -q -w "$wheels" "$source_dir"
python -m pip install --no-deps -q "$@" "$wheels"/*.whl
