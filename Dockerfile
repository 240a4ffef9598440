# Image for the Kubeflow Pipelines deployment: every component runs in it.
#
# Based on Python 3.11 rather than tensorflow/tfx:1.16.0, whose Python (3.10)
# is not the interpreter the pinned lock file is resolved and tested with;
# this way the image holds exactly the environment that CI tests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /pipeline
COPY requirements/lock.txt requirements/lock.txt
# TFX 1.16 declares Python < 3.11; all of its compiled dependencies ship 3.11 wheels.
RUN pip install --ignore-requires-python --no-deps -r requirements/lock.txt

COPY . .
RUN pip install --no-deps . && python -c "import tfx, trainer.task, components.serving_pusher"
