from relance.scenario.model import Scenario
from relance.scenario.plan import compile_scenario, plan_from_definition

DOC = {
    "scenario": "demo",
    "trigger": {"event": "downloaded"},
    "steps": [
        {"id": "hello", "send": "welcome", "subject": "Bonjour"},
        {"id": "pause", "wait": "3d"},
        {"id": "opened?", "if": {"opened": "hello"}, "then": "bump"},
        {"id": "bye", "end": True},
        {"id": "bump", "score": "+5"},
    ],
}


def test_edges_default_to_the_following_step_and_last_step_leaves():
    plan = compile_scenario(Scenario.model_validate(DOC))
    assert plan.first == "hello"
    assert plan.edges["hello"] == {"next": "pause"}
    assert plan.edges["opened?"] == {"then": "bump", "else": "bye"}
    assert plan.edges["bye"] == {}
    assert plan.edges["bump"] == {"next": None}


def test_hash_survives_a_round_trip_and_changes_with_the_content():
    plan = compile_scenario(Scenario.model_validate(DOC))
    assert plan_from_definition(plan.definition()).hash == plan.hash
    edited = {**DOC, "steps": [*DOC["steps"][:1], {"id": "pause", "wait": "4d"}, *DOC["steps"][2:]]}
    assert compile_scenario(Scenario.model_validate(edited)).hash != plan.hash
