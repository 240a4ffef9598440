"""What a cluster runs for ML Metadata, on this machine, for tests: a MySQL-protocol server (Debian's MariaDB) and
a gRPC ML Metadata service over it.

On a cluster, every task talks to KFP's `metadata-grpc-service`, the
`metadata_store_server` binary over MySQL. That binary is in no package these
machines can install, so `GrpcFront` stands in for it, in the tests only: it
answers each RPC of ml_metadata's own MetadataStoreService (every method of
the service's descriptor, not a chosen subset) by calling the same C++ store
the `ml-metadata` wheel opens on MySQL, and returns the store's errors as the
gRPC status codes the server would, which the client turns back into
ml_metadata's errors. The client side (TFX's launchers, `models`, `rollback`)
is the real gRPC client of the `ml-metadata` wheel.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import message_factory
from ml_metadata import errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2, metadata_store_service_pb2

_STATUS = {code.value[0]: code for code in grpc.StatusCode}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariaDB:
    """A MariaDB server of its own (data folder, socket and port under `folder`), started and stopped here."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mariadbd") is not None and shutil.which("mariadb-install-db") is not None

    def start(self, database: str = "mlmd") -> MariaDB:
        data, run = self.folder / "data", self.folder / "run"
        run.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, text=True, timeout=300)
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={run / 'mysqld.sock'}",
             f"--pid-file={run / 'mysqld.pid'}", "--bind-address=127.0.0.1", f"--port={self.port}", "--user=root",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--skip-log-bin"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "mariadbd.log", "w"))
        deadline = time.time() + 120
        while True:
            ready = subprocess.run(["mariadb", "--no-defaults", "-uroot", f"--socket={run / 'mysqld.sock'}", "-e",
                                    f"CREATE DATABASE IF NOT EXISTS {database}"], capture_output=True, text=True)
            if ready.returncode == 0:
                return self
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("MariaDB did not start: " + (self.folder / "mariadbd.log").read_text()[-2000:])
            time.sleep(0.5)

    def connection_config(self, database: str = "mlmd") -> metadata_store_pb2.ConnectionConfig:
        config = metadata_store_pb2.ConnectionConfig()
        config.mysql.host = "127.0.0.1"
        config.mysql.port = self.port
        config.mysql.database = database
        config.mysql.user = "root"
        return config

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


class GrpcFront:
    """ml_metadata's MetadataStoreService over a store the `ml-metadata` wheel opens (here: on MariaDB)."""

    def __init__(self, connection_config: metadata_store_pb2.ConnectionConfig, port: int | None = None):
        self._store = metadata_store.MetadataStore(connection_config)
        self._lock = threading.Lock()  # one connection to the database: one call at a time, as in the server
        service = metadata_store_service_pb2.DESCRIPTOR.services_by_name["MetadataStoreService"]
        handlers = {method.name: self._handler(method) for method in service.methods}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service.full_name, handlers)])
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port or 0}")

    def _handler(self, method):
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)

        def call(request, context):
            response = response_class()
            try:
                with self._lock:
                    self._store._call(method.name, request, response)
            except errors.StatusError as error:
                context.abort(_STATUS.get(error.error_code, grpc.StatusCode.UNKNOWN), str(error))
            return response

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=request_class.FromString,
                                                   response_serializer=response_class.SerializeToString)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> GrpcFront:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=2).wait()


def serve_forever(mysql_port: int, grpc_port: int) -> None:
    """`python -m tests.metadata_service MYSQL_PORT GRPC_PORT`: the front as a process of its own, as the real
    service runs in a pod of its own (a run's tasks then never share its Python process)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.mysql.host, config.mysql.port, config.mysql.database, config.mysql.user = "127.0.0.1", mysql_port, \
        "mlmd", "root"
    front = GrpcFront(config, grpc_port).start()
    print(f"serving ML Metadata on {front.address}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    import sys

    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    serve_forever(int(sys.argv[1]), int(sys.argv[2]))
