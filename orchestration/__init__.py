"""Running the pipeline: the local run lock, Kubeflow compile/submit/schedule, cron."""
