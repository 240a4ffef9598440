# Image for the Kubeflow Pipelines and Vertex AI deployments: every task runs in it.
#
# Based on Python 3.11 rather than tensorflow/tfx:1.16.0, whose Python (3.10)
# is not the interpreter the pinned lock file is resolved and tested with;
# this way the image holds exactly the environment that CI tests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

COPY requirements/lock.txt /tmp/lock.txt
# TFX 1.16 declares Python < 3.11; all of its compiled dependencies ship 3.11 wheels.
RUN pip install --ignore-requires-python --no-deps -r /tmp/lock.txt && rm /tmp/lock.txt

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
