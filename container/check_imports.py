"""Imports every module a pipeline task loads and prints where each came from, as JSON.

Run after install_project.sh from a working directory outside the source (the
Dockerfile does, and so does tests/test_packaging.py): a module missing from
the wheel fails here, not in a task on the cluster.
"""

import importlib
import json
import sys

# What TFX loads by module path, what the KFP components import, and the CLI.
TASK_MODULES = ("trainer.task", "trainer.tuning", "trainer.preprocessing", "components.serving_pusher",
                "components.anomalies_gate", "components.baseline_resolver", "orchestration.engines.kfp_tasks",
                "orchestration.engines.kfp_components", "orchestration.engines.tfx_node", "orchestration.engines.local",
                "inference.predict", "traffic.server", "reporting.run_report", "ingest.spans",
                "pipeline.pipeline", "pipeline_runner")

if __name__ == "__main__":
    sys.path = [p for p in sys.path if p not in ("", ".")]  # the working directory is not the installation
    print(json.dumps({name: importlib.import_module(name).__file__ for name in TASK_MODULES}))
