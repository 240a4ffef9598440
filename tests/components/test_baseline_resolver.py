from tfx.types import standard_artifacts

from components.baseline_resolver import select_blessed_before as select_baseline


def _model(artifact_id):
    model = standard_artifacts.Model()
    model.id = artifact_id
    return model


def _blessing(artifact_id, model_id, blessed):
    blessing = standard_artifacts.ModelBlessing()
    blessing.id = artifact_id
    blessing.set_int_custom_property("current_model_id", model_id)
    blessing.set_int_custom_property("blessed", 1 if blessed else 0)
    return blessing


def test_first_model_has_no_baseline():
    assert select_baseline([_model(1)], [_model(1)], []) == ([], [])


def test_rerun_of_a_blessed_candidate_does_not_compare_it_with_itself():
    models, blessings = [_model(1)], [_blessing(10, 1, True)]
    assert select_baseline([_model(1)], models, blessings) == ([], [])


def test_baseline_is_the_newest_blessed_model_older_than_the_candidate():
    models = [_model(1), _model(2), _model(3), _model(4)]
    blessings = [_blessing(10, 1, True), _blessing(11, 2, True), _blessing(12, 3, False)]
    model, blessing = select_baseline([_model(4)], models, blessings)
    assert [m.id for m in model] == [2] and [b.id for b in blessing] == [11]


def test_unblessed_models_are_never_a_baseline():
    models = [_model(1), _model(2)]
    assert select_baseline([_model(2)], models, [_blessing(10, 1, False)]) == ([], [])


def test_warm_start_never_uses_a_model_newer_than_the_examples():
    """`before` may hold any artifact type: ids are one sequence across MLMD."""
    examples = standard_artifacts.Examples()
    examples.id = 5
    models = [_model(3), _model(7)]
    blessings = [_blessing(4, 3, True), _blessing(8, 7, True)]
    model, _ = select_baseline([examples], models, blessings)
    assert [m.id for m in model] == [3]
