"""The ML Metadata record's helpers: store addresses and the span of an Examples artifact."""

import pytest
from tfx.types import standard_artifacts

from contract import metadata


def test_the_span_is_read_where_this_tfx_keeps_it_and_where_older_ones_did():
    examples = standard_artifacts.Examples()
    assert metadata.span_of(examples.mlmd_artifact) is None
    examples.set_int_custom_property(metadata.SPAN, 3)  # TFX 1.16's ImportExampleGen
    assert metadata.span_of(examples.mlmd_artifact) == 3
    older = standard_artifacts.Examples()
    older.mlmd_artifact.properties[metadata.SPAN].int_value = 2
    assert metadata.span_of(older.mlmd_artifact) == 2


def test_store_addresses_name_grpc_or_sqlite_and_nothing_else(tmp_path):
    assert metadata.grpc_store("localhost:8081") == metadata.grpc_store("grpc://localhost:8081") == \
        "grpc://localhost:8081"
    config = metadata.connection_config(metadata.grpc_store("metadata-grpc-service.kubeflow:8080"))
    assert (config.host, config.port) == ("metadata-grpc-service.kubeflow", 8080)
    sqlite = metadata.connection_config(metadata.sqlite_store(tmp_path / "m.sqlite"), read_only=True)
    assert sqlite.sqlite.filename_uri == str(tmp_path / "m.sqlite")
    for wrong in ("mysql://db", "grpc://no-port", str(tmp_path / "m.sqlite")):
        with pytest.raises(metadata.StoreAddressError, match="expected grpc://HOST:PORT"):
            metadata.connection_config(wrong)


def test_an_unreachable_store_is_named_with_the_first_line_of_its_error():
    with pytest.raises(metadata.StoreUnreachableError) as error:
        metadata.reachable_store("grpc://127.0.0.1:9")  # the discard port: nothing listens
    assert str(error.value).startswith("cannot reach the ML Metadata store grpc://127.0.0.1:9: ")
    assert "\n" not in str(error.value)
