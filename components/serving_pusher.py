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

After the commit record, the pusher names the version in TF Serving's model
config (contract.served: `<serving_dir>/models.config`, version policy
`specific`), so that a server, running or fresh, loads only a committed
version. The config always names the newest complete version (a rollback is a
new version too); a push stopped between the commit record and the config is
rolled forward before the next run or rollback (follow_commit, from
orchestration.run.reconcile), which says so, and only to a version whose model
the pipeline's store holds blessed.
"""


import dataclasses
import json
import posixpath
import time
import uuid
from typing import Callable, List

from absl import logging

# Not `tfx.v1`: it imports TFX's Google Cloud extensions (Vertex AI's client, BigQuery), which every process that
# loads this component would pay for, each Kubeflow task included; these are the modules it re-exports.
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import path_utils

from components import model_card
from contract import interrupts, layout, metadata, served, storage


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


def pushed_model_uri_or_unknown(serving_dir: str, version: int) -> str:
    uri = pushed_model_uri(posixpath.join(serving_dir, str(version)))
    return uri if isinstance(uri, str) and uri else "no push record names it"


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


incomplete_reason = served.version_incomplete_reason


def existing_versions(serving_dir: str) -> list[int]:
    """The complete versions (a valid commit record, every file it lists present), oldest first."""
    return [v for v in _numbered(serving_dir) if not incomplete_reason(posixpath.join(serving_dir, str(v)))]


def incomplete_versions(serving_dir: str) -> dict[int, str]:
    """{version: why it is incomplete} of the numbered folders without a valid commit record."""
    found = {v: served.version_incomplete_reason(posixpath.join(serving_dir, str(v))) for v in _numbered(serving_dir)}
    return {v: why for v, why in found.items() if why}


def digests_text(version_dir: str) -> str:
    """The commit record of a version's files: their SHA-256, in `sha256sum` format."""
    return "".join(f"{served.sha256(posixpath.join(version_dir, name))}  {name}\n"
                   for name in storage.backend.files(version_dir) if name != layout.DIGESTS_FILE)


digest_problems = served.digest_problems


def name_version(serving_dir: str, version: int, name: str = "", base_path: str = "") -> bool:
    """Makes the serving config name `version` (True if it changed). `name` and `base_path` (how the server
    sees serving_dir): as given, else as the config has them, else served.MODEL_NAME and served.base_path_of."""
    try:
        before = served.read_config(serving_dir)
    except served.ConfigError:
        before = None
    config = served.ServingConfig(name or (before.name if before else served.MODEL_NAME),
                                  base_path or (before.base_path if before else served.base_path_of(serving_dir)),
                                  version)
    if config == before:
        return False
    served.write_config(serving_dir, config)
    return True


def follow_root(serving_dir: str, earlier_roots) -> str | None:
    """Points the serving config at this serving folder where it names the serving folder of one of
    `earlier_roots` (the folders this root was in before it was moved or copied, as its store's records name
    them: store_health.relocation): a server told to read there would serve the old place's versions, or none. Any
    other base_path is kept: a server's own mount (KServe's /mnt/models, a container's), set by hand or at the
    push. A line saying so, or None. Called under the root's lease."""
    try:
        config = served.read_config(serving_dir)
    except served.ConfigError:
        return None
    old_places = {str(layout.RunLayout(str(root).rstrip("/")).serving_dir) for root in earlier_roots}
    if config is None or config.base_path.rstrip("/") not in old_places:
        return None
    served.write_config(serving_dir, dataclasses.replace(config, base_path=served.base_path_of(serving_dir)))
    return (f"{layout.SERVING_CONFIG_FILE} named {config.base_path}, this folder's place before its root was moved or "
            f"copied: it names {served.base_path_of(serving_dir)} now")


def follow_commit(serving_dir: str, trusted: Callable[[int], bool]) -> dict[int, str]:
    """Makes the serving config name the newest complete version where it names an older one (a push or
    rollback stopped between its commit record and the config) or is missing or unreadable (a root an earlier
    release wrote). A newest version whose files differ from their digests is not named, nor one for which
    `trusted(version)` is False: a commit record only says the files are whole, not that the model was ever
    evaluated (a folder made by hand has one too). Called only under the root's lease. {version: a line saying
    what was done or why not}, {} if there was nothing to do."""
    complete = existing_versions(serving_dir)
    if not complete:
        return {}
    newest = complete[-1]
    try:
        config, unreadable = served.read_config(serving_dir), None
    except served.ConfigError as error:
        config, unreadable = None, str(error)
    if (config is not None and config.version >= newest) or served.damage(posixpath.join(serving_dir, str(newest))):
        return {}
    if not trusted(newest):
        left = f"still names version {config.version}" if config else ("left as it is" if unreadable else
                                                                       "not written")
        uri = pushed_model_uri_or_unknown(serving_dir, newest)
        return {newest: f"version {newest} is complete but its model ({uri}) is no blessed model of this pipeline's "
                        f"store: not served; {served.CONFIG_FILE} {left}"}
    name_version(serving_dir, newest)
    if unreadable:
        return {newest: f"{unreadable}: rewritten to name version {newest}, the newest complete one"}
    if config is None:
        return {newest: f"{served.CONFIG_FILE} was missing (a serving folder an earlier release wrote): written to "
                        f"name version {newest}, the newest complete one"}
    return {newest: f"version {newest} was committed but {served.CONFIG_FILE} still named version {config.version} "
                    f"(its push stopped before naming it): {served.CONFIG_FILE} now names version {newest}"}


def clean_up(serving_dir: str) -> tuple[list[str], int]:
    """Moves incomplete versions out of `serving_dir`, removes staging copies killed pushes left; leaves the
    serving config alone (the push names its own version last; rolling forward is reconcile's, which knows the
    store).

    Returns (what was done, one line each; the highest number ever used, moved-aside versions and the one the
    serving config names included, so that no number a server may have seen is used again). Called only under the
    root's lease.
    """
    done = [f"removed the staging copy {name} a killed push left"
            for name in storage.remove_staging(serving_dir, [STAGING_PREFIX])]
    # A config that is a link is rewritten in place by the push (name_version), never followed.
    done += storage.move_links_aside(serving_dir, aside_dir(serving_dir), lambda name: name != served.CONFIG_FILE)
    done += served.odd_version_folders(serving_dir)
    for version, why in incomplete_versions(serving_dir).items():
        moved = storage.move_aside(posixpath.join(serving_dir, str(version)), aside_dir(serving_dir), str(version),
                                   layout.DIGESTS_FILE)
        done.append(f"version {version} was incomplete ({why}): moved to {moved}; its number is not used again")
    try:  # the version the config names was served, and a server may hold it, even where its folder was deleted
        config = served.read_config(serving_dir)
    except served.ConfigError:  # the push writes the config anew
        config = None
    # a number beyond any a push could write is a config edited by hand: not a version a server holds
    named = [config.version] if config is not None and config.version is not None and \
        0 < config.version < layout.MAX_NUMBER else []
    highest = max(_numbered(serving_dir) + storage.aside_numbers(aside_dir(serving_dir), _aside_number) + named,
                  default=0)
    return done, highest


def push_model(model_dir: str, serving_dir: str, model_uri: str | None = None,
               record: dict | None = None, extra_files=None,
               served_name: str = "", served_base_path: str = "", always_new: bool = False) -> PushResult:
    """Copies `model_dir` to the next free version under `serving_dir` (contract.storage's protocol: the
    files under a staging name, renamed into place, the commit record last), then names it in the serving
    config (name_version, with `served_name` and `served_base_path`).

    `model_uri` identifies the model (default: `model_dir`); when the newest
    complete version already holds it, nothing is copied (unless `always_new`:
    a rollback is a version of its own). `record`: more
    fields of the version's push record (a rollback's, say). `extra_files`:
    {path in the version: text} written beside the copy, or a function of the version number that gives them (the
    model card names its version: written again when another pusher took the number first).
    """
    if not storage.backend.exists(posixpath.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{model_dir} holds no SavedModel (saved_model.pb); nothing was pushed")
    model_uri = model_uri or model_dir
    cleaned, highest = clean_up(serving_dir)
    versions = existing_versions(serving_dir)
    if versions and not always_new:
        newest = posixpath.join(serving_dir, str(versions[-1]))
        if pushed_model_uri(newest) == model_uri:
            name_version(serving_dir, versions[-1], served_name, served_base_path)
            return PushResult(versions[-1], newest, new=False, cleaned=tuple(cleaned))
    version = layout.next_number(highest, serving_dir, "version")  # refused before a file is copied
    storage.backend.makedirs(serving_dir)
    staging = posixpath.join(serving_dir, STAGING_PREFIX + uuid.uuid4().hex)
    try:  # whatever fails (a full disk, say), the staging copy goes and the served versions stay as they were
        # A version pushed again (a rollback) brings its commit record: it must not arrive before the files.
        storage.copy_tree(model_dir, staging, leave_out=[layout.DIGESTS_FILE])
        storage.backend.makedirs(posixpath.join(staging, posixpath.dirname(layout.PUSH_RECORD_FILE)))
        push = {"model_uri": model_uri, "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(record or {})}
        storage.backend.write(posixpath.join(staging, layout.PUSH_RECORD_FILE), json.dumps(push).encode())
        while True:
            files = extra_files(version) if callable(extra_files) else extra_files
            for name, text in (files or {}).items():
                storage.backend.write(posixpath.join(staging, name), text.encode())
            commit = digests_text(staging).encode()
            target = posixpath.join(serving_dir, str(version))
            try:
                storage.publish(staging, target, layout.DIGESTS_FILE, commit)
                break
            except storage.AlreadyExistsError:  # another pusher took this version
                version = layout.next_number(version, serving_dir, "version")
    finally:
        storage.backend.rmtree(staging)
    name_version(serving_dir, version, served_name, served_base_path)
    return PushResult(version, target, new=True, cleaned=tuple(cleaned))


WITHDRAWN_WEIGHTS = "withdrawn_weights"  # a rollback's push record: {file under variables/: SHA-256} it withdrew


def _weights(digests: dict[str, str] | None) -> frozenset:
    """A version's or a model's weights, by their files' SHA-256 (its graph may differ between two saves of the
    same weights: its functions are numbered by the process that traced them)."""
    return frozenset((name, sha) for name, sha in (digests or {}).items()
                     if isinstance(name, str) and isinstance(sha, str) and name.startswith("variables/"))


def withdrawn_weights(version_dir: str) -> dict[str, str]:
    """{file under variables/: SHA-256} of a version, from its commit record ({} without a readable one)."""
    return dict(_weights(served.recorded_digests(version_dir)))


def withdrawn_twin(model_dir: str, serving_dir: str) -> str | None:
    """Why `model_dir` must not be pushed: its weights are those of a version a rollback withdrew (and no later
    rollback served again), so pushing it would undo that rollback; None otherwise. A run can train such a model
    without new data (a search that keeps the configured values, say): its blessing is against the model rolled
    back to, which says nothing of why the other was withdrawn. The weights withdrawn are read from the rollback's
    own record (so that deleting the withdrawn version does not lift the block), else, for a rollback an earlier
    release made, from the withdrawn version's commit record."""
    candidate = _weights({name: served.sha256(posixpath.join(model_dir, name))
                          for name in storage.backend.files(model_dir) if name.startswith("variables/")})
    versions = existing_versions(serving_dir)
    weights = {version: _weights(served.recorded_digests(posixpath.join(serving_dir, str(version))))
               for version in versions}
    withdrawn: dict[frozenset, tuple] = {}  # weights -> (the version withdrawn, the rollback's record, its version)
    for version in versions:
        record = push_record(posixpath.join(serving_dir, str(version)))
        withdrawn.pop(weights[version], None)  # a rollback to a model serves it again
        away = record.get(metadata.ROLLED_BACK_FROM)
        recorded = record.get(WITHDRAWN_WEIGHTS)
        # the rollback's record; else (an earlier release's rollback, a record edited by hand) the version's own
        gone = (_weights(recorded) if isinstance(recorded, dict) else None) or weights.get(away)
        if isinstance(away, int) and gone:
            withdrawn[gone] = (away, record, version)
    if not candidate or candidate not in withdrawn:
        return None
    away, record, version = withdrawn[candidate]
    reason = record.get(metadata.ROLLBACK_REASON)
    withdrew = f"withdrew ({reason})" if reason else "withdrew"
    serve_anyway = (f", or, if version {away}'s weights should be served after all, `rollback --to {away}`"
                    if away in versions else f" (version {away} is no longer in {serving_dir})")
    return (f"the candidate's weights are version {away}'s, which the rollback to version "
            f"{record.get(metadata.ROLLED_BACK_TO)} (pushed as version {version}) {withdrew}: pushing it would undo "
            f"that rollback; train on new data or other settings for another model{serve_anyway}")


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
    # The model's name and the serving folder's path as the server sees them, for the serving config ("": as the
    # config has them, else contract.served's defaults); KServe: the InferenceService's name and /mnt/models.
    served_name: Parameter[str] = "",
    served_base_path: Parameter[str] = "",
) -> None:
    interrupts.check_held()  # a Ctrl-C swallowed in an earlier node of a local run: nothing is pushed after it
    if model_blessing.get_int_custom_property(metadata.BLESSED) != 1:
        pushed_model.set_int_custom_property(metadata.PUSHED, 0)
        return
    source = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    withheld = withdrawn_twin(source, serving_dir)
    if withheld:
        logging.warning("ServingPusher: the model %s %s", model.uri, withheld)
        pushed_model.set_int_custom_property(metadata.PUSHED, 0)
        pushed_model.set_string_custom_property(metadata.PUSH_WITHHELD, withheld)
        return
    spans = [span for span in (metadata.span_of(e.mlmd_artifact) for e in examples or []) if span is not None]
    # The Evaluator scored the newest span's examples.
    newest = max(examples or [], key=lambda e: metadata.span_of(e.mlmd_artifact) or 0, default=None)
    judged = layout.judged_split(artifact_utils.decode_split_names(newest.split_names)) if newest else None
    facts = model_card.gather(pipeline_name, model.uri, source, model_evaluation.uri if model_evaluation else None,
                              spans, examples_root, json.loads(training_settings), judged_split=judged)
    result = push_model(source, serving_dir, model_uri=model.uri,
                        extra_files=lambda version: {layout.MODEL_CARD_FILE: model_card.render(dataclasses.replace(
                            facts, served_as=f"{posixpath.basename(serving_dir.rstrip('/'))}/{version}"))},
                        served_name=served_name, served_base_path=served_base_path)
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
