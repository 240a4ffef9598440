"""Where a pipeline's ML Metadata store is, and how to open it.

A store is named by one string wherever it travels (a Kubeflow package, a
flag, a task's argument): `grpc://HOST:PORT` for an ML Metadata gRPC service
(every Kubeflow Pipelines install runs one) or `sqlite:///ABSOLUTE/PATH` for
a SQLite file (a local run's, a rehearsal's). ml_metadata is imported when a
store is opened, not when this module is.
"""

from __future__ import annotations

import os
import re

from contract.errors import CommandError, first_line

GRPC_SCHEME = "grpc://"
SQLITE_SCHEME = "sqlite://"
# Every Kubeflow Pipelines install runs this ML Metadata gRPC service.
KFP_METADATA_SERVICE = "grpc://metadata-grpc-service.kubeflow:8080"
CONNECT_TIMEOUT_SECONDS = 30

# Node ids of the pipeline, in pipeline order: each node's context in the store is "<pipeline>.<node id>", and
# the summary, the history and the tests find a run's executions by them.
EXAMPLE_GEN = "ImportExampleGen"
STATISTICS_GEN = "StatisticsGen"
SCHEMA_IMPORTER = "ImportSchemaGen"
EXAMPLE_VALIDATOR = "ExampleValidator"
ANOMALIES_GATE = "AnomaliesGate"
TRANSFORM = "Transform"
TUNER = "Tuner"  # only with --tune
HYPERPARAMETERS_RESOLVER = "HyperparametersResolver"  # without --tune: the newest search's result, if any
TRAINER = "Trainer"
BASELINE_RESOLVER = "BaselineResolver"
WARM_START_RESOLVER = "WarmStartResolver"  # only with warm_start
SPAN_WINDOW_RESOLVER = "SpanWindowResolver"  # only with span_window > 1
PREVIOUS_STATISTICS_RESOLVER = "PreviousStatisticsResolver"  # not with builtin_resolver (the Vertex package)
EVALUATOR = "Evaluator"
PUSHER = "ServingPusher"
RESOLVER_IDS = frozenset({BASELINE_RESOLVER, WARM_START_RESOLVER, SPAN_WINDOW_RESOLVER, PREVIOUS_STATISTICS_RESOLVER,
                          HYPERPARAMETERS_RESOLVER})

# Custom properties of artifacts. TFX's own, which this project reads:
BLESSED = "blessed"  # ModelBlessing: 1 blessed, 0 not
CURRENT_MODEL_ID = "current_model_id"  # ModelBlessing: the candidate Model's artifact id
SPAN = "span"  # Examples: the span ingested (a property in older TFX, a custom property in 1.16)
# ... and this project's: the ServingPusher's and a rollback's record on a PushedModel,
PUSHED = "pushed"  # 1 the model is served as PUSHED_VERSION, 0 not pushed (not blessed)
# 1: the Pusher found its model already the newest complete version, copied nothing and recorded it (a retry of
# a Pusher killed between publishing and recording, or a rerun without this project's resolver).
ALREADY_SERVED = "already_served"
PUSH_CLEANED = "cleaned"  # what the push moved aside or removed first, a line each
# Why a blessed model was not pushed (PUSHED 0): its weights are those of a version a rollback withdrew.
PUSH_WITHHELD = "withheld"
PUSHED_VERSION = "pushed_version"
PUSHED_DESTINATION = "pushed_destination"
PUSHED_MODEL_ID = "pushed_model_id"  # the Model artifact whose files were pushed
ROLLED_BACK_TO = "rolled_back_to"  # a rollback: the version whose model is served again,
ROLLED_BACK_FROM = "rolled_back_from"  # the version served before it,
ROLLBACK_REASON = "reason"  # why,
ROLLED_BACK_AT = "rolled_back_at"  # and when (UTC)
# ... and on any artifact whose files were found gone (marked DELETED; removed again if they come back).
MISSING_SINCE = "missing_since"
NOT_IN_ROOT_SINCE = "not_in_root_since"  # an output of a root copied in part, which the copy does not hold
# In the Vertex package, the Tuner's best_hyperparameters and the Evaluator's blessing carry the root of the
# pipeline that wrote them, and its resolvers ask for it: Vertex ML Metadata is shared by every pipeline of a
# project and region, and its resolvers see every pipeline of the same name (orchestration.engines.vertex).
ROOT = "root"
ROOT_ENV = "STAMP_ROOT"  # set on those two tasks by the Vertex package: the root to stamp
ROLLBACK_EXECUTION_TYPE = "Rollback"
# A complete version in the serving folder that no execution recorded (its pusher died in between), recorded
# when the next run, `models` or `rollback` found it.
RECONCILED_EXECUTION_TYPE = "ReconciledPush"
RECONCILED_AT = "reconciled_at"


class StoreAddressError(CommandError, ValueError):
    """A store string that is neither grpc://HOST:PORT nor sqlite:///PATH; the message names it."""


def stamp_root(artifacts) -> None:
    """Marks each artifact (a TFX Artifact) as the root's that ROOT_ENV names, where the task was given one."""
    root = os.environ.get(ROOT_ENV)
    if root:
        for artifact in artifacts:
            artifact.set_string_custom_property(ROOT, root)


def under_root(uri: str, root: str) -> bool:
    """Whether `uri` (an artifact's) lies under the folder `root` (a path or a URI), not merely beside it."""
    return bool(uri) and uri.startswith(root.rstrip("/") + "/")


# The folders of a root that its records name files in: TFX's outputs, and the pushed versions.
_RECORDED_FOLDERS = ("pipeline_root", "serving_model")


def moved_from(recorded: str, root: str) -> str | None:
    """Where `recorded` (a path a local root's own store holds: an artifact's, a push's destination) is under
    `root` when it was written under another folder that `root` was then (a root moved, restored or copied
    elsewhere, its store with it): the same place below `root`, if that is there; None for a path under `root`
    already, one of no root's folders, a URI, or a file `root` does not hold. A local path's alone: a
    deployment's root, whose store others may share, is never moved so."""
    before, moved = _recorded_root(recorded, root)
    return moved if before and os.path.lexists(moved) else None


def written_under(recorded: str, root: str) -> str:
    """The root folder other than `root` that `recorded` (a path a local root's own store holds) was written
    under, a root moved or copied since; "" when it names a place of `root` itself, or of no root."""
    return _recorded_root(recorded, root)[0]


def _recorded_root(recorded: str, root: str) -> tuple[str, str]:
    """(the root folder `recorded` was written under, when that is not `root`; else ""), and the same place below
    `root`. The root is what precedes the last of its recorded folders on the path (the root's own path may hold a
    folder of that name, what is below it does not): a root moved into a folder of its own (x/y/r to x/y) is told
    from one that stayed by that, not by the path's text alone."""
    if not recorded.startswith("/") or not root:
        return "", ""
    at, folder = max((recorded.rfind(f"/{folder}/"), folder) for folder in _RECORDED_FOLDERS)
    if at <= 0:
        return "", ""
    here = os.path.abspath(root)
    return (recorded[:at] if recorded[:at] != here else ""), os.path.join(here, folder,
                                                                           recorded[at + len(folder) + 2:])


def of_root(input_dict: dict, root: str | None) -> dict:
    """`input_dict` (a resolver's: {key: [artifacts]}) with only the artifacts whose files lie under `root`; as it is
    with no root. A Kubeflow package's resolvers read a store that other deployments (other roots, the same
    pipeline name) may share: their artifacts are in the same pipeline context."""
    if not root:
        return input_dict
    return {key: [a for a in artifacts if under_root(a.uri, root)] for key, artifacts in input_dict.items()}


def span_of(artifact) -> int | None:
    """The span an Examples artifact (its ML Metadata proto) was ingested as: a custom property in TFX 1.16,
    a property before."""
    for fields in (artifact.custom_properties, artifact.properties):
        if SPAN in fields:
            return fields[SPAN].int_value
    return None


def sqlite_store(path: str | os.PathLike) -> str:
    return SQLITE_SCHEME + os.path.abspath(os.fspath(path))


def grpc_store(address: str) -> str:
    """HOST:PORT (as a flag takes it) -> grpc://HOST:PORT."""
    return address if address.startswith(GRPC_SCHEME) else GRPC_SCHEME + address


def connection_config(store: str, read_only: bool = False):
    """The ML Metadata connection config of `store`."""
    from ml_metadata.proto import metadata_store_pb2

    if store.startswith(GRPC_SCHEME):
        host, _, port = store[len(GRPC_SCHEME):].rpartition(":")
        if not host or not re.fullmatch(r"[0-9]+", port):  # ASCII: '²'.isdigit() holds, int('²') raises
            raise StoreAddressError(f"metadata store {store!r}: expected grpc://HOST:PORT")
        config = metadata_store_pb2.MetadataStoreClientConfig(host=host, port=int(port))
        config.client_timeout_sec = CONNECT_TIMEOUT_SECONDS
        return config
    if store.startswith(SQLITE_SCHEME):
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = store[len(SQLITE_SCHEME):]
        config.sqlite.connection_mode = (metadata_store_pb2.SqliteMetadataSourceConfig.READONLY if read_only else
                                         metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
        return config
    raise StoreAddressError(f"metadata store {store!r}: expected grpc://HOST:PORT or sqlite:///PATH")


def open_store(store: str, read_only: bool = False):
    """An ml_metadata MetadataStore on `store`."""
    from ml_metadata import metadata_store

    return metadata_store.MetadataStore(connection_config(store, read_only))


class StoreUnreachableError(CommandError, RuntimeError):
    """The store did not answer; the message names it and the first line of the error."""


def reachable_store(store: str, read_only: bool = False):
    """`open_store`, after asking the store something, so that an unreachable one is named before any work."""
    connection_config(store)  # a malformed address is named as such, not as unreachable
    try:
        opened = open_store(store, read_only)
        opened.get_context_types()
    except Exception as error:  # grpc, sqlite and MLMD raise different types
        raise StoreUnreachableError(f"cannot reach the ML Metadata store {store}: {first_line(error)}") from None
    return opened
