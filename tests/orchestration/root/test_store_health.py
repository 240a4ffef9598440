from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from orchestration.root import store_health

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


def _execution(store, node_context, state):
    type_id = store.put_execution_type(metadata_store_pb2.ExecutionType(name="Tuner"))
    execution_id, _, _ = store.put_execution(metadata_store_pb2.Execution(type_id=type_id, last_known_state=state),
                                               [], [node_context])
    return execution_id


def test_the_temp_folders_of_canceled_executions_go_and_no_other_nor_any_through_a_link(tmp_path):
    """A killed Tuner or Trainer leaves its feature cache in its execution's temp folder, which TFX never removes."""
    store = _store(tmp_path)
    node_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    node = metadata_store_pb2.Context(type_id=node_type, name="cats.Tuner")
    [node.id] = store.put_contexts([node])
    Execution = metadata_store_pb2.Execution
    canceled, running, linked = (_execution(store, node, state)
                                 for state in (Execution.CANCELED, Execution.RUNNING, Execution.CANCELED))
    root = tmp_path / "pipeline_root"
    temp = lambda execution: root / "Tuner" / ".system" / "executor_execution" / str(execution) / ".temp"  # noqa
    for execution in (canceled, running):
        cache = temp(execution) / str(execution) / "feature_cache"
        cache.mkdir(parents=True)
        (cache / "views.tfrecord").write_bytes(b"x" * 3000)
    users = tmp_path / "users_folder"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"y" * 10)
    model_run = root / "Tuner" / "model_run" / str(canceled) / "feature_cache"  # where the Trainer caches
    model_run.mkdir(parents=True)
    (model_run / "views.tfrecord").write_bytes(b"z" * 500)
    temp(linked).parent.mkdir(parents=True)
    temp(linked).symlink_to(users)

    assert store_health.remove_canceled_temp(store, str(root)) == (2, 3500)
    assert not temp(canceled).exists() and not model_run.exists() and model_run.parent.is_dir()
    assert (temp(canceled).parent).is_dir()  # the execution's own record folder stays
    assert (temp(running) / str(running) / "feature_cache" / "views.tfrecord").exists()
    assert (users / "photo.jpg").exists() and temp(linked).is_symlink()
    assert store_health.remove_canceled_temp(store, str(root)) == (0, 0)
