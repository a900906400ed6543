from speechops import conditions as c


def test_transition_time_kept_while_status_unchanged_and_reset_on_flip():
    first = c.set_condition([], c.READY, True, "Ready", "all good", 1, now="T1")
    same = c.set_condition(first, c.READY, True, "Ready", "still good", 2, now="T2")
    flipped = c.set_condition(same, c.READY, False, "InvalidSpec", "bad", 3, now="T3")
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["message"] == "still good"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "T3" and flipped[0]["status"] == "False"


def test_other_writers_conditions_are_kept():
    theirs = c.set_condition([], c.SCALING_ACTIVE, True, "Forecasting", "ok", 1, now="T1")
    mine = c.set_condition(theirs, c.READY, True, "Ready", "ok", 1, now="T2")
    assert [x["type"] for x in mine] == [c.SCALING_ACTIVE, c.READY]
    assert c.get_condition(mine, c.SCALING_ACTIVE)["reason"] == "Forecasting"
