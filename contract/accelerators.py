"""What a deployment asked the Trainer's task to run on, as the task sees it.

The Kubeflow compiler sets these environment variables on the Trainer's task
beside the accelerator resource it requests; the Trainer reads them and
refuses to train on its CPU when TensorFlow sees fewer GPUs than were asked
for (an image without the CUDA libraries, a node without drivers).
"""

ACCELERATOR_ENV = "TRAINER_ACCELERATOR"  # e.g. nvidia.com/gpu
ACCELERATOR_COUNT_ENV = "TRAINER_ACCELERATOR_COUNT"
