"""`models` and `rollback`: the pushed versions of a local output directory or a deployment's root."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import posixpath
import sys

from cli import flags
from cli.flags import SettingsError
from contract.layout import RunLayout


def _models_flags(models: argparse.ArgumentParser) -> None:
    add_root_flags(models)
    flags.add_json(models)


def _rollback_flags(rollback: argparse.ArgumentParser) -> None:
    add_root_flags(rollback)
    rollback.add_argument("--to", type=flags.count(1), required=True, metavar="N", help="The version to serve again.")
    rollback.add_argument("--reason", default="", type=flags.utf8_text,
                          help="Why, kept with the rollback (shown by `models`).")
    flags.add_serving_target_flags(rollback.add_argument_group("serving on the cluster"),
                                   "the rollback starts a new revision of the InferenceService with your "
                                   "kubeconfig's credentials (KServe copies a gs:// root once)")


def add_root_flags(parser: argparse.ArgumentParser, output_dir_help: str | None = None) -> None:
    """--output-dir, or --root with the deployment's store (--metadata-grpc or --metadata-sqlite): what
    history_store reads."""
    where = parser.add_mutually_exclusive_group()
    if output_dir_help:
        flags.add_output_dir(where, output_dir_help)
    else:
        flags.add_output_dir(where)
    flags.add_root(where, "A deployment's root, as given to compile (gs://... or a path on its volume, mounted here); "
                          "needs --metadata-grpc or --metadata-sqlite.")
    flags.add_store_flags(parser, "With --root: the deployment's ML Metadata gRPC service (on a cluster: kubectl "
                                  "port-forward -n kubeflow svc/metadata-grpc-service 8080, then localhost:8080).",
                          "With --root: a SQLite ML Metadata file.")


def history_store(args: argparse.Namespace):
    """(root, store) that `models` and `rollback` read: --output-dir's, or --root with a --metadata-* flag."""
    from contract import metadata
    from orchestration.root import run_lock, store_health

    if args.root is not None:
        if not (args.metadata_grpc or args.metadata_sqlite):
            raise SettingsError("--root needs the deployment's ML Metadata store: --metadata-grpc HOST:PORT (e.g. "
                                "through kubectl port-forward) or --metadata-sqlite PATH")
        if args.metadata_sqlite and not os.path.isfile(args.metadata_sqlite):
            raise SettingsError(f"--metadata-sqlite {args.metadata_sqlite}: no such file")
        _, store = flags.given_store(args)
        root = args.root
    else:
        if args.metadata_grpc or args.metadata_sqlite:
            raise SettingsError("--metadata-grpc and --metadata-sqlite go with --root (a deployment's root); "
                                "--output-dir has its own store")
        root = args.output_dir.resolve()
        linked = run_lock.linked_parts(root)  # reading through one would show another folder's models as these
        if linked:
            raise run_lock.LinkedPartError(f"{args.output_dir} cannot be read: {'; '.join(linked)}")
        path = RunLayout(root).metadata_path
        if not path.exists():
            raise SettingsError(f"no metadata store at {path}: has the pipeline run in {args.output_dir}?")
        store = metadata.sqlite_store(path)
    return root, store_health.readable_history(store, root)


def command_models(args: argparse.Namespace) -> int:
    """List the pushed model versions, read from MLMD.

    Each pushed version with its eval metrics, the data spans its model was trained on, its blessing and its
    push time: of a local output directory, or of a deployment (--root and its store). The served version is the
    one the serving config (models.config) names, if its files match their digests; a damaged version is named.
    The table's columns: version (the serving_model/ folder TF Serving loads), pushed at, model (the id of
    its Model artifact in ML Metadata; -1 where none is recorded), spans, accuracy on the judged split
    with its 95% interval, auc, examples (and the split they are from), blessed, the TFLite models' agreement with
    it (float16/int8), and the path of its files.
    """
    root, store = history_store(args)  # first: a refused setting is named before the seconds TFX takes to import
    from contract import metadata as metadata_lib
    from contract import served
    from orchestration.run import reconcile
    from reporting import model_history

    serving_dir = str(RunLayout(str(root)).serving_dir)
    store = metadata_lib.open_store(store, read_only=True)
    versions = model_history.pushed_versions(store, serving_dir, scoped=args.root is not None)
    # Read only: versions the store missed are named here; the next run or rollback records them.
    unknown = reconcile.unrecorded(serving_dir, versions)
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in versions], indent=2))
    else:
        print(model_history.table(versions))
    for found in unknown:
        fate = ("(its pusher stopped before recording it); the next run or rollback records it"
                if reconcile.holds_model(store, found) else "and its model is not in this store: never recorded")
        print(f"warning: {found.describe()} {fate}", file=sys.stderr)
    trusted = reconcile.known_model(store, serving_dir, versions)
    warnings = serving_config_warnings(serving_dir, {v.version for v in versions}, trusted)
    for line in served.serving_dir_warnings(serving_dir) + warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def serving_config_warnings(serving_dir: str, recorded: set[int], trusted) -> list[str]:
    """What is wrong with the serving config and what the next writer will change in it (read only; no file is
    hashed). `recorded`: the versions the history lists (it names what is wrong with those); `trusted`: whether
    a version may be rolled forward to (orchestration.run.reconcile.known_model)."""
    from contract import served

    try:
        config = served.read_config(serving_dir)
    except (served.ConfigError, OSError) as error:  # a damaged config is a warning here, not the command's end
        return [f"{error}; the next run or rollback rewrites it"]
    complete = served.complete_versions(serving_dir)
    if config is not None and config.version not in complete and config.version not in recorded:
        return [_unservable(serving_dir, config.version)]
    newest = max(complete, default=None)
    if newest is None or (config is not None and config.version >= newest):
        return []
    if config is None:
        return [f"{serving_dir} has no {served.CONFIG_FILE} (an earlier release wrote it): a server started with "
                f"--model_config_file finds none; the next run or rollback writes it, naming version {newest}"]
    if not trusted(newest):
        return [f"version {newest} is complete but no blessed model of this pipeline's store: never named in "
                f"{served.CONFIG_FILE} by a run or rollback; servers load "
                + (f"version {config.version}" if config else "nothing")]
    return [f"version {newest} is committed but {served.CONFIG_FILE} names version {config.version} (its push "
            f"stopped before naming it): servers load version {config.version}; the next run or rollback names "
            f"version {newest}"]


def _unservable(serving_dir: str, version: int) -> str:
    """The config names a version no one can load (not there, or incomplete) that the history does not list."""
    from contract import served, storage

    folder = posixpath.join(serving_dir, str(version))
    what = ("which is not there" if not storage.backend.exists(folder)
            else f"which is {served.damage(folder, check_bytes=False)}")
    return (f"{served.CONFIG_FILE} names version {version}, {what}: a server loads nothing until a push or rollback "
            "names another")


def command_rollback(args: argparse.Namespace) -> int:
    """Serve an earlier pushed version again (pushed as a new version).

    Copies version N to the next version number and names that version in the serving config (models.config),
    so that TF Serving serves N's model again; records the rollback in ML Metadata. The next run's
    candidate is compared with this model. Refused, with nothing changed, for a version never pushed or blessed,
    one whose files changed since its push, the version already served, one TF Serving could not run (loaded and
    checked as TF Serving loads it), or while a run holds the root. Works on
    a local output directory or a deployment's root (--root with its store).
    """
    import config as config_lib
    from orchestration.serving import kserve, rollback

    # Checked before anything changes: a name Kubernetes would refuse is a refusal, not a half-done rollback.
    serving = (kserve.Serving(**flags.settings_from(args, kserve.Serving, "serving_", only=flags.SERVING_TARGET))
               if args.serving_rollout else None)
    root, store = history_store(args)
    done = rollback.rollback(root, store, args.to, args.reason, config_lib.PipelineConfig().name,
                             scoped=args.root is not None)  # a deployment's store may be shared
    for note in done.notes:
        print(note)
    before = (f"version {done.from_version} was served before" if done.from_version is not None
              else "nothing was served before")
    if done.completed:
        print(f"the interrupted rollback to version {done.to_version} is complete: its model is served as version "
              f"{done.pushed.version} ({done.pushed.path}), now recorded; {before}")
    else:
        print(f"version {done.to_version}'s model is served again as version {done.pushed.version} "
              f"({done.pushed.path}); {before}")
    print(rollback.reach_clients(str(root), done.pushed.version, serving))
    if args.root is None:  # a local root's report page lists its runs and marks the served model's
        from orchestration.engines import local

        problem = local.republish_report(root)
        if problem:
            print(f"warning: {problem}", file=sys.stderr)
    return 0


COMMANDS = (
    flags.Command.of("models", _models_flags, command_models),
    flags.Command.of("rollback", _rollback_flags, command_rollback),
)
