"""ServingPusher: copies a blessed model into a TF Serving model folder.

`<serving_dir>/<version>/` with integer versions, newest highest, as TF
Serving expects. A version is copied under a hidden name and renamed into
place, so a server never loads half a model, and an existing version is never
overwritten or deleted: a failed or rejected run leaves what is served as it was.
Each version records which model it holds (layout.PUSH_RECORD_FILE) and the
SHA-256 of each of its files (layout.DIGESTS_FILE); a model that is already the
newest version is not pushed again.
"""


import dataclasses
import hashlib
import json
import os
import time
import uuid
from typing import List

import tensorflow as tf
from tfx import v1 as tfx
from tfx.utils import io_utils, path_utils

from components import model_card
from contract import layout, metadata


@dataclasses.dataclass(frozen=True)
class PushResult:
    version: int
    path: str
    new: bool  # False: the model was already the newest version; nothing was copied


def pushed_model_uri(version_dir: str) -> str | None:
    """The URI of the model a version holds, from its push record."""
    path = os.path.join(version_dir, layout.PUSH_RECORD_FILE)
    if not tf.io.gfile.exists(path):
        return None
    return json.loads(tf.io.gfile.GFile(path).read()).get("model_uri")


def existing_versions(serving_dir: str) -> list[int]:
    if not tf.io.gfile.isdir(serving_dir):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(serving_dir) if name.rstrip("/").isdigit())


def _files(folder: str) -> list[str]:
    """Every file under `folder` (local or remote), as sorted posix paths relative to it."""
    found = []
    for directory, _, names in tf.io.gfile.walk(folder):
        relative = os.path.relpath(directory, folder)
        found += [name if relative == "." else f"{relative}/{name}" for name in names]
    return sorted(found)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_digests(version_dir: str) -> None:
    """Records the SHA-256 of every file of the version in layout.DIGESTS_FILE."""
    lines = [f"{_sha256(os.path.join(version_dir, name))}  {name}\n" for name in _files(version_dir)
             if name != layout.DIGESTS_FILE]
    with tf.io.gfile.GFile(os.path.join(version_dir, layout.DIGESTS_FILE), "w") as f:
        f.write("".join(lines))


def digest_problems(version_dir: str) -> list[str]:
    """How the files of a pushed version differ from the digests recorded at its push ([] if they do not)."""
    path = os.path.join(version_dir, layout.DIGESTS_FILE)
    if not tf.io.gfile.exists(path):
        return [f"no {layout.DIGESTS_FILE}: its files cannot be checked"]
    recorded = {}
    for line in tf.io.gfile.GFile(path).read().splitlines():
        digest, _, name = line.partition("  ")
        recorded[name] = digest
    present = set(_files(version_dir)) - {layout.DIGESTS_FILE}
    problems = [f"{name}: missing" for name in sorted(set(recorded) - present)]
    problems += [f"{name}: not in the version when it was pushed" for name in sorted(present - set(recorded))]
    problems += [f"{name}: changed since the push" for name in sorted(present & set(recorded))
                 if _sha256(os.path.join(version_dir, name)) != recorded[name]]
    return problems


def push_model(model_dir: str, serving_dir: str, model_uri: str | None = None,
               record: dict | None = None, extra_files: dict[str, str] | None = None) -> PushResult:
    """Copies `model_dir` to the next free version under `serving_dir`.

    `model_uri` identifies the model (default: `model_dir`); when the newest
    version already holds it, nothing is copied. `record`: more fields of the
    version's push record (a rollback's, say). `extra_files`: {path in the
    version: text} written beside the copy (the model card).
    """
    if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{model_dir} holds no SavedModel (saved_model.pb); nothing was pushed")
    model_uri = model_uri or model_dir
    versions = existing_versions(serving_dir)
    if versions:
        newest = os.path.join(serving_dir, str(versions[-1]))
        if pushed_model_uri(newest) == model_uri:
            return PushResult(versions[-1], newest, new=False)
    tf.io.gfile.makedirs(serving_dir)
    staging = os.path.join(serving_dir, f".incoming-{uuid.uuid4().hex}")
    try:  # whatever fails (a full disk, say), the staging copy goes and the served versions stay as they were
        io_utils.copy_dir(model_dir, staging)
        tf.io.gfile.makedirs(os.path.join(staging, os.path.dirname(layout.PUSH_RECORD_FILE)))
        with tf.io.gfile.GFile(os.path.join(staging, layout.PUSH_RECORD_FILE), "w") as f:
            json.dump({"model_uri": model_uri, "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       **(record or {})}, f)
        for name, text in (extra_files or {}).items():
            with tf.io.gfile.GFile(os.path.join(staging, name), "w") as f:
                f.write(text)
        write_digests(staging)
        version = max(versions, default=0) + 1
        while True:
            target = os.path.join(serving_dir, str(version))
            try:
                tf.io.gfile.rename(staging, target, overwrite=False)
                return PushResult(version, target, new=True)
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
    code_version: tfx.dsl.components.Parameter[str] = "",  # a fingerprint of this code: a change is a cache miss
    # For the model card: the Evaluator's output, the examples the model was trained on and where their
    # spans' ingest reports are, the pipeline's name and the training settings (JSON).
    model_evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation] = None,
    examples: tfx.dsl.components.InputArtifact[List[tfx.types.standard_artifacts.Examples]] = None,
    examples_root: tfx.dsl.components.Parameter[str] = "",
    pipeline_name: tfx.dsl.components.Parameter[str] = "",
    training_settings: tfx.dsl.components.Parameter[str] = "{}",
) -> None:
    if model_blessing.get_int_custom_property(metadata.BLESSED) != 1:
        pushed_model.set_int_custom_property(metadata.PUSHED, 0)
        return
    source = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    spans = [span for span in (metadata.span_of(e.mlmd_artifact) for e in examples or []) if span is not None]
    facts = model_card.gather(pipeline_name, model.uri, source, model_evaluation.uri if model_evaluation else None,
                              spans, examples_root, json.loads(training_settings))
    result = push_model(source, serving_dir, model_uri=model.uri,
                        extra_files={layout.MODEL_CARD_FILE: model_card.render(facts)})
    if not result.new:  # already served (an unchanged rerun on an orchestrator without our resolver)
        pushed_model.set_int_custom_property(metadata.PUSHED, 0)
        pushed_model.set_string_custom_property("already_served_as", result.path)
        return
    pushed_model.set_int_custom_property(metadata.PUSHED, 1)
    pushed_model.set_int_custom_property(metadata.PUSHED_VERSION, result.version)
    pushed_model.set_string_custom_property(metadata.PUSHED_DESTINATION, result.path)
    pushed_model.set_int_custom_property(metadata.PUSHED_MODEL_ID, model.id)
