"""The sink's settings: one that cannot work is refused naming its flag."""

import pytest

from traffic.settings import SinkSettings, SinkSettingsError


@pytest.mark.parametrize("settings, flag", [({"batch_size": 0}, "--batch-size"),
                                            ({"sample_rate": 0.0}, "--sample-rate"),
                                            ({"batch_seconds": float("nan")}, "--batch-seconds"),
                                            ({"max_instances": 0}, "--max-instances"),
                                            ({"max_instances": 10**400}, "--max-instances"),
                                            ({"batch_size": 10**400}, "--batch-size"),
                                            ({"pending_mb": 1e300}, "--pending-mb"),
                                            ({"header_seconds": 0.0}, "--header-seconds"),
                                            ({"max_connections": 10**400}, "--max-connections")])
def test_settings_that_cannot_work_are_refused_with_their_flag(settings, flag):
    with pytest.raises(SinkSettingsError, match=flag):
        SinkSettings(**settings)


@pytest.mark.parametrize("settings, said", [({"sample_rate": 0.0}, "--sample-rate 0.0: must be above 0 and at most 1"),
                                            ({"batch_size": 0}, "--batch-size 0: must be at least 1, at most 1e+12")])
def test_a_refusal_states_each_bound_once(settings, said):
    with pytest.raises(SinkSettingsError) as refused:
        SinkSettings(**settings)
    assert str(refused.value) == said
