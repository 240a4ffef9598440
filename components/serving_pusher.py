"""ServingPusher: copies a blessed model into a TF Serving model folder.

`<serving_dir>/<version>/` with integer versions, newest highest, as TF
Serving expects. A version is published by contract.storage's protocol: copied
under a hidden name, renamed into place, and committed last by the SHA-256 of
each of its files (layout.DIGESTS_FILE), so that a version is complete or, on
an object store where a folder rename is not atomic, visibly incomplete. An
incomplete version is never counted as pushed or served; the next push or
rollback moves it aside and takes a number above it. A complete version is
never overwritten or deleted: a failed or rejected run leaves what is served as
it was. Each version records which model it holds (layout.PUSH_RECORD_FILE); a
model that is already the newest complete version is not copied again.
"""


import dataclasses
import hashlib
import json
import posixpath
import time
import uuid
from typing import List

from absl import logging

# Not `tfx.v1`: it imports TFX's Google Cloud extensions (Vertex AI's client, BigQuery), which every process that
# loads this component would pay for, each Kubeflow task included; these are the modules it re-exports.
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import path_utils

from components import model_card
from contract import layout, metadata, storage


@dataclasses.dataclass(frozen=True)
class PushResult:
    version: int
    path: str
    new: bool  # False: the model was already the newest complete version; nothing was copied
    # What this push cleaned up first: "version 3 was incomplete (no commit record): moved to ...", and
    # staging copies a killed push left.
    cleaned: tuple[str, ...] = ()


STAGING_PREFIX = ".incoming-"


def pushed_model_uri(version_dir: str) -> str | None:
    """The URI of the model a version holds, from its push record."""
    return push_record(version_dir).get("model_uri")


UNREADABLE = "unreadable"  # the key of a push record that cannot be read: its file and what is wrong


def push_record(version_dir: str) -> dict:
    """The version's push record (layout.PUSH_RECORD_FILE), {} if it has none, {UNREADABLE: why} if it is
    damaged."""
    path = posixpath.join(version_dir, layout.PUSH_RECORD_FILE)
    if not storage.backend.exists(path):
        return {}
    try:
        return storage.read_json(path)
    except storage.UnreadableFileError as error:
        return {UNREADABLE: str(error)}


def _numbered(serving_dir: str) -> list[int]:
    if not storage.backend.isdir(serving_dir):
        return []
    return sorted(n for name in storage.backend.listdir(serving_dir) if (n := layout.version_number(name)) is not None)


def aside_dir(serving_dir: str) -> str:
    """Where incomplete versions go: beside serving_dir, so that no server and no reader of it sees them."""
    return serving_dir.rstrip("/") + storage.ASIDE_SUFFIX


def _aside_number(name: str) -> int | None:
    return layout.version_number(name.split("-", 1)[0])


incomplete_reason = storage.version_incomplete_reason


def existing_versions(serving_dir: str) -> list[int]:
    """The complete versions (a valid commit record, every file it lists present), oldest first."""
    return [v for v in _numbered(serving_dir) if not incomplete_reason(posixpath.join(serving_dir, str(v)))]


def incomplete_versions(serving_dir: str) -> dict[int, str]:
    """{version: why it is incomplete} of the numbered folders without a valid commit record."""
    found = {v: storage.version_incomplete_reason(posixpath.join(serving_dir, str(v))) for v in _numbered(serving_dir)}
    return {v: why for v, why in found.items() if why}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with storage.backend.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digests_text(version_dir: str) -> str:
    """The commit record of a version's files: their SHA-256, in `sha256sum` format."""
    return "".join(f"{_sha256(posixpath.join(version_dir, name))}  {name}\n"
                   for name in storage.backend.files(version_dir) if name != layout.DIGESTS_FILE)


def digest_problems(version_dir: str) -> list[str]:
    """How the files of a pushed version differ from the digests recorded at its push ([] if they do not)."""
    recorded = storage.recorded_digests(version_dir)
    if recorded is None:
        return [f"no {layout.DIGESTS_FILE}: its files cannot be checked"]
    present = set(storage.backend.files(version_dir)) - {layout.DIGESTS_FILE}
    problems = [f"{name}: missing" for name in sorted(set(recorded) - present)]
    problems += [f"{name}: not in the version when it was pushed" for name in sorted(present - set(recorded))]
    problems += [f"{name}: changed since the push" for name in sorted(present & set(recorded))
                 if _sha256(posixpath.join(version_dir, name)) != recorded[name]]
    return problems


def clean_up(serving_dir: str) -> tuple[list[str], int]:
    """Moves incomplete versions out of `serving_dir` and removes staging copies killed pushes left.

    Returns (what was done, one line each; the highest number ever used, moved-aside versions included, so
    that no number a server may have seen is used again). Called only under the root's lease.
    """
    done = [f"removed the staging copy {name} a killed push left"
            for name in storage.remove_staging(serving_dir, [STAGING_PREFIX])]
    done += storage.move_links_aside(serving_dir, aside_dir(serving_dir), lambda name: True)
    done += storage.odd_version_folders(serving_dir)
    for version, why in incomplete_versions(serving_dir).items():
        moved = storage.move_aside(posixpath.join(serving_dir, str(version)), aside_dir(serving_dir), str(version),
                                   layout.DIGESTS_FILE)
        done.append(f"version {version} was incomplete ({why}): moved to {moved}; its number is not used again")
    highest = max(_numbered(serving_dir) + storage.aside_numbers(aside_dir(serving_dir), _aside_number), default=0)
    return done, highest


def push_model(model_dir: str, serving_dir: str, model_uri: str | None = None,
               record: dict | None = None, extra_files: dict[str, str] | None = None) -> PushResult:
    """Copies `model_dir` to the next free version under `serving_dir` (contract.storage's protocol: the
    files under a staging name, renamed into place, the commit record last).

    `model_uri` identifies the model (default: `model_dir`); when the newest
    complete version already holds it, nothing is copied. `record`: more
    fields of the version's push record (a rollback's, say). `extra_files`:
    {path in the version: text} written beside the copy (the model card).
    """
    if not storage.backend.exists(posixpath.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{model_dir} holds no SavedModel (saved_model.pb); nothing was pushed")
    model_uri = model_uri or model_dir
    cleaned, highest = clean_up(serving_dir)
    versions = existing_versions(serving_dir)
    if versions:
        newest = posixpath.join(serving_dir, str(versions[-1]))
        if pushed_model_uri(newest) == model_uri:
            return PushResult(versions[-1], newest, new=False, cleaned=tuple(cleaned))
    storage.backend.makedirs(serving_dir)
    staging = posixpath.join(serving_dir, STAGING_PREFIX + uuid.uuid4().hex)
    try:  # whatever fails (a full disk, say), the staging copy goes and the served versions stay as they were
        # A version pushed again (a rollback) brings its commit record: it must not arrive before the files.
        storage.copy_tree(model_dir, staging, leave_out=[layout.DIGESTS_FILE])
        storage.backend.makedirs(posixpath.join(staging, posixpath.dirname(layout.PUSH_RECORD_FILE)))
        push = {"model_uri": model_uri, "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(record or {})}
        storage.backend.write(posixpath.join(staging, layout.PUSH_RECORD_FILE), json.dumps(push).encode())
        for name, text in (extra_files or {}).items():
            storage.backend.write(posixpath.join(staging, name), text.encode())
        commit = digests_text(staging).encode()
        version = highest + 1
        while True:
            target = posixpath.join(serving_dir, str(version))
            try:
                storage.publish(staging, target, layout.DIGESTS_FILE, commit)
                return PushResult(version, target, new=True, cleaned=tuple(cleaned))
            except storage.AlreadyExistsError:  # another pusher took this version
                version += 1
    finally:
        storage.backend.rmtree(staging)


@component
def ServingPusher(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: OutputArtifact[standard_artifacts.PushedModel],
    serving_dir: Parameter[str],
    code_version: Parameter[str] = "",  # a fingerprint of this code: a change is a cache miss
    # For the model card: the Evaluator's output, the examples the model was trained on and where their
    # spans' ingest reports are, the pipeline's name and the training settings (JSON).
    model_evaluation: InputArtifact[standard_artifacts.ModelEvaluation] = None,
    examples: InputArtifact[List[standard_artifacts.Examples]] = None,
    examples_root: Parameter[str] = "",
    pipeline_name: Parameter[str] = "",
    training_settings: Parameter[str] = "{}",
) -> None:
    if model_blessing.get_int_custom_property(metadata.BLESSED) != 1:
        pushed_model.set_int_custom_property(metadata.PUSHED, 0)
        return
    source = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    spans = [span for span in (metadata.span_of(e.mlmd_artifact) for e in examples or []) if span is not None]
    # The Evaluator scored the newest span's examples.
    newest = max(examples or [], key=lambda e: metadata.span_of(e.mlmd_artifact) or 0, default=None)
    judged = layout.judged_split(artifact_utils.decode_split_names(newest.split_names)) if newest else None
    facts = model_card.gather(pipeline_name, model.uri, source, model_evaluation.uri if model_evaluation else None,
                              spans, examples_root, json.loads(training_settings), judged_split=judged)
    result = push_model(source, serving_dir, model_uri=model.uri,
                        extra_files={layout.MODEL_CARD_FILE: model_card.render(facts)})
    for line in result.cleaned:
        logging.warning("ServingPusher: %s", line)
    if result.cleaned:
        pushed_model.set_string_custom_property(metadata.PUSH_CLEANED, "\n".join(result.cleaned))
    # Already served (the retry of a Pusher killed after publishing, or a rerun without our resolver): the
    # version is recorded all the same, so the history and the next baseline know what is served.
    pushed_model.set_int_custom_property(metadata.PUSHED, 1)
    pushed_model.set_int_custom_property(metadata.ALREADY_SERVED, 0 if result.new else 1)
    pushed_model.set_int_custom_property(metadata.PUSHED_VERSION, result.version)
    pushed_model.set_string_custom_property(metadata.PUSHED_DESTINATION, result.path)
    pushed_model.set_int_custom_property(metadata.PUSHED_MODEL_ID, model.id)
