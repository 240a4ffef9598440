from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from orchestration import store_health

LIVE, DELETED = metadata_store_pb2.Artifact.LIVE, metadata_store_pb2.Artifact.DELETED


def _store(tmp_path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    return metadata_store.MetadataStore(config)


def test_artifacts_whose_files_are_gone_are_marked_deleted_and_come_back_with_their_files(tmp_path):
    store = _store(tmp_path)
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="ExampleStatistics"))
    kept, gone, retired = tmp_path / "kept", tmp_path / "gone", tmp_path / "retired"
    kept.mkdir()
    retired.mkdir()
    ids = store.put_artifacts([metadata_store_pb2.Artifact(type_id=type_id, uri=str(kept), state=LIVE),
                               metadata_store_pb2.Artifact(type_id=type_id, uri=str(gone), state=LIVE),
                               metadata_store_pb2.Artifact(type_id=type_id, uri=str(retired), state=DELETED)])
    states = lambda: [a.state for a in store.get_artifacts_by_id(ids)]  # noqa: E731

    assert store_health.mark_missing(store) == [f"ExampleStatistics {gone}"]
    assert states() == [LIVE, DELETED, DELETED]
    assert store_health.mark_missing(store) == []  # marked once

    gone.mkdir()  # the storage is back
    assert store_health.mark_missing(store) == []
    assert states() == [LIVE, LIVE, DELETED], "only what mark_missing marked comes back"
    assert store_health.MISSING_PROPERTY not in store.get_artifacts_by_id([ids[1]])[0].custom_properties


def test_a_store_that_does_not_exist_yet_has_nothing_to_mark(tmp_path):
    assert store_health.open_store(tmp_path / "metadata.sqlite") is None
    assert store_health.run_ids(tmp_path / "metadata.sqlite") == frozenset()
    store_health.check(tmp_path / "metadata.sqlite")
    assert not (tmp_path / "metadata.sqlite").exists()
