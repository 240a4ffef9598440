# Image for the Kubeflow Pipelines and Vertex AI deployments: every task runs in it.
#
# Based on Python 3.11 rather than tensorflow/tfx:1.16.0, whose Python (3.10)
# is not the interpreter the pinned lock file is resolved and tested with;
# this way the image holds exactly the environment that CI tests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# VARIANT=gpu adds the CUDA libraries TensorFlow loads at start-up (requirements/lock-gpu.txt); without
# them TensorFlow sees no GPU and trains on the CPU (the Trainer then refuses a task given GPUs).
ARG VARIANT=cpu
COPY requirements/lock.txt requirements/lock-gpu.txt /tmp/
# TFX 1.16 declares Python < 3.11; all of its compiled dependencies ship 3.11 wheels.
RUN case "$VARIANT" in cpu|gpu) ;; *) echo "VARIANT must be cpu or gpu, got $VARIANT" >&2; exit 1;; esac \
    && pip install --ignore-requires-python --no-deps -r /tmp/lock.txt \
    && if [ "$VARIANT" = gpu ]; then pip install --no-deps -r /tmp/lock-gpu.txt; fi \
    && rm /tmp/lock.txt /tmp/lock-gpu.txt

# The project as an installed wheel (not a source folder on the path): TFX loads the model
# code by module path (trainer.task.run_fn) and KFP's executor imports orchestration.* from
# whatever working directory the task starts in. tests/test_packaging.py runs the same script.
# The Vertex package reads the curated schema from /pipeline/pipeline/schema/schema.pbtxt.
COPY . /tmp/src
WORKDIR /home
RUN sh /tmp/src/container/install_project.sh /tmp/src \
    && python /tmp/src/container/check_imports.py \
    && mkdir -p /pipeline/pipeline/schema \
    && cp /tmp/src/pipeline/schema/schema.pbtxt /pipeline/pipeline/schema/ \
    && rm -rf /tmp/src
