"""ServingPusher: copies a blessed model into a TF Serving model folder.

`<serving_dir>/<version>/` with integer versions, newest highest, as TF
Serving expects. A version is copied under a hidden name and renamed into
place, so a server never loads half a model, and an existing version is never
overwritten or deleted: a failed or rejected run leaves what is served as it was.
"""


import os
import uuid

import tensorflow as tf
from tfx import v1 as tfx
from tfx.utils import io_utils, path_utils



def existing_versions(serving_dir: str) -> list[int]:
    if not tf.io.gfile.isdir(serving_dir):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(serving_dir) if name.rstrip("/").isdigit())


def push_model(model_dir: str, serving_dir: str) -> tuple[int, str]:
    """Copies `model_dir` to the next free version under `serving_dir`; returns (version, path)."""
    if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{model_dir} holds no SavedModel (saved_model.pb); nothing was pushed")
    tf.io.gfile.makedirs(serving_dir)
    staging = os.path.join(serving_dir, f".incoming-{uuid.uuid4().hex}")
    io_utils.copy_dir(model_dir, staging)
    try:
        version = max(existing_versions(serving_dir), default=0) + 1
        while True:
            target = os.path.join(serving_dir, str(version))
            try:
                tf.io.gfile.rename(staging, target, overwrite=False)
                return version, target
            except tf.errors.AlreadyExistsError:  # another pusher took this version
                version += 1
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


@tfx.dsl.components.component
def ServingPusher(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    pushed_model: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.PushedModel],
    serving_dir: tfx.dsl.components.Parameter[str],
) -> None:
    if model_blessing.get_int_custom_property("blessed") != 1:
        pushed_model.set_int_custom_property("pushed", 0)
        return
    source = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    version, target = push_model(source, serving_dir)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_int_custom_property("pushed_version", version)
    pushed_model.set_string_custom_property("pushed_destination", target)
    pushed_model.set_int_custom_property("pushed_model_id", model.id)
