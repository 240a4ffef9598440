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


def _statistics(artifact_id):
    statistics = standard_artifacts.ExampleStatistics()
    statistics.id = artifact_id
    return statistics


def test_previous_statistics_are_the_newest_older_than_this_runs_examples():
    from components.baseline_resolver import ARTIFACT_KEY, BEFORE_KEY, LatestBeforeStrategy

    examples = standard_artifacts.Examples()
    examples.id = 20
    older = [_statistics(5), _statistics(12), _statistics(9)]
    resolved = LatestBeforeStrategy().resolve_artifacts(None, {BEFORE_KEY: [examples],
                                                               ARTIFACT_KEY: older + [_statistics(21)]})
    assert [a.id for a in resolved[ARTIFACT_KEY]] == [12], "21 is this run's own statistics"
    assert resolved[BEFORE_KEY] == [examples]


def test_first_span_has_no_previous_statistics_and_a_rerun_keeps_the_same_answer():
    from components.baseline_resolver import select_newest_before

    examples = standard_artifacts.Examples()
    examples.id = 3
    assert select_newest_before([examples], [_statistics(4)]) == []
    first = select_newest_before([examples], [_statistics(2), _statistics(4)])
    again = select_newest_before([examples], [_statistics(2), _statistics(4), _statistics(7)])
    assert [a.id for a in first] == [a.id for a in again] == [2]


def _push(artifact_id, model_id, pushed=True):
    push = standard_artifacts.PushedModel()
    push.id = artifact_id
    push.set_int_custom_property("pushed", 1 if pushed else 0)
    push.set_int_custom_property("pushed_model_id", model_id)
    return push


def _resolve(candidate, models, blessings, pushes):
    from components.baseline_resolver import (
        BEFORE_KEY,
        BLESSING_KEY,
        MODEL_KEY,
        PUSHED_KEY,
        LatestBlessedBeforeStrategy,
    )

    resolved = LatestBlessedBeforeStrategy().resolve_artifacts(None, {
        BEFORE_KEY: [_model(candidate)], MODEL_KEY: models, BLESSING_KEY: blessings, PUSHED_KEY: pushes})
    assert resolved[PUSHED_KEY] == []
    return [m.id for m in resolved[MODEL_KEY]]


def test_after_a_rollback_the_baseline_is_the_model_rolled_back_to():
    models = [_model(1), _model(4), _model(20)]
    blessings = [_blessing(2, 1, True), _blessing(5, 4, True)]
    # version 1 holds model 1 (push 3), version 2 model 4 (push 6); the rollback pushed model 1 again (push 9)
    pushes = [_push(3, 1), _push(6, 4), _push(9, 1)]
    assert _resolve(20, models, blessings, pushes) == [1]
    assert _resolve(20, models, blessings, pushes[:2]) == [4]  # no rollback: the newest blessed, as before


def test_a_rollback_after_the_candidate_was_trained_makes_the_model_rolled_back_to_its_baseline():
    """A run killed before its push, resumed after a rollback: its cached candidate (20) was trained while model 4
    was served, which the rollback (push 30, model 1 again) withdrew: it must beat model 1."""
    models = [_model(1), _model(4), _model(20)]
    blessings = [_blessing(2, 1, True), _blessing(5, 4, True), _blessing(21, 20, True)]
    rollback = _push(30, 1)
    rollback.set_int_custom_property("rolled_back_to", 1)
    assert _resolve(20, models, blessings, [_push(3, 1), _push(6, 4), rollback]) == [1]
    # without the rollback, a push after the candidate (its own, on a rerun) changes nothing: the model served then
    assert _resolve(20, models, blessings, [_push(3, 1), _push(6, 4), _push(30, 20)]) == [4]
    # a rollback, then a model newer than the candidate pushed: the newest push of a model older than it
    models.append(_model(40))
    later = [_push(3, 1), _push(6, 4), rollback, _push(42, 40)]
    assert _resolve(20, models, [*blessings, _blessing(41, 40, True)], later) == [1]


def test_a_candidate_pushed_then_withdrawn_by_a_rollback_keeps_the_baseline_it_was_judged_against():
    """Versions 1-3 (models 1, 4, 20), then a rollback to version 1: a rerun with no new data (candidate 20, cached)
    is judged against model 4 as when it was pushed, so its evaluation and push stay cached and nothing is pushed;
    judged against model 1 it would be evaluated again and only the withdrawn-weights check would stop its push."""
    models = [_model(1), _model(4), _model(20)]
    blessings = [_blessing(2, 1, True), _blessing(5, 4, True), _blessing(21, 20, True)]
    rollback = _push(30, 1)
    rollback.set_int_custom_property("rolled_back_to", 1)
    assert _resolve(20, models, blessings, [_push(3, 1), _push(6, 4), _push(22, 20), rollback]) == [4]


def test_pushes_after_the_candidate_or_not_pushed_are_passed_over():
    models = [_model(1), _model(4), _model(7)]
    blessings = [_blessing(2, 1, True), _blessing(5, 4, True), _blessing(8, 7, True)]
    # a rerun of candidate 7: its own push (id 9) is newer than it; push 6 pushed nothing
    assert _resolve(7, models, blessings, [_push(3, 1), _push(6, 4, pushed=False), _push(9, 7)]) == [1]
    assert _resolve(7, models, blessings, []) == [4]  # nothing served yet: the newest blessed model


def test_a_push_whose_version_is_damaged_is_never_the_baseline(tmp_path):
    from components.serving_pusher import push_model

    source = tmp_path / "model"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"graph")
    (source / "variables" / "variables.index").write_bytes(b"index")
    serving = tmp_path / "serving"
    paths = [push_model(str(source), str(serving), model_uri=f"model-{n}").path for n in (1, 2)]
    models = [_model(1), _model(4), _model(20)]
    blessings = [_blessing(2, 1, True), _blessing(5, 4, True)]
    pushes = [_push(3, 1), _push(6, 4)]
    for push, path in zip(pushes, paths):
        push.set_string_custom_property("pushed_destination", path)
    assert _resolve(20, models, blessings, pushes) == [4]
    (serving / "2" / "saved_model.pb").write_bytes(b"graph-tampered")
    assert _resolve(20, models, blessings, pushes) == [1], "version 2 is passed over"
    (serving / "1" / "variables" / "variables.index").unlink()
    assert _resolve(20, models, blessings, pushes) == [], "nor is a damaged version's model the newest blessed one"
