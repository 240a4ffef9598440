"""Where a pipeline's ML Metadata store is, and how to open it.

A store is named by one string wherever it travels (a Kubeflow package, a
flag, a task's argument): `grpc://HOST:PORT` for an ML Metadata gRPC service
(every Kubeflow Pipelines install runs one) or `sqlite:///ABSOLUTE/PATH` for
a SQLite file (a local run's, a rehearsal's). ml_metadata is imported when a
store is opened, not when this module is.
"""

from __future__ import annotations

import os

GRPC_SCHEME = "grpc://"
SQLITE_SCHEME = "sqlite://"
# Every Kubeflow Pipelines install runs this ML Metadata gRPC service.
KFP_METADATA_SERVICE = "grpc://metadata-grpc-service.kubeflow:8080"
CONNECT_TIMEOUT_SECONDS = 30


class StoreAddressError(ValueError):
    """A store string that is neither grpc://HOST:PORT nor sqlite:///PATH; the message names it."""


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
        if not host or not port.isdigit():
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


class StoreUnreachableError(RuntimeError):
    """The store did not answer; the message names it and the first line of the error."""


def reachable_store(store: str, read_only: bool = False):
    """`open_store`, after asking the store something, so that an unreachable one is named before any work."""
    connection_config(store)  # a malformed address is named as such, not as unreachable
    try:
        opened = open_store(store, read_only)
        opened.get_context_types()
    except Exception as error:  # grpc, sqlite and MLMD raise different types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreUnreachableError(f"cannot reach the ML Metadata store {store}: {first_line}") from None
    return opened
