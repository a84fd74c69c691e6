import json

from relance.scenario.model import STEP_TAGS
from relance.scenario.schema import scenario_json_schema


def test_schema_is_deterministic_and_titled() -> None:
    first, second = scenario_json_schema(), scenario_json_schema()
    assert json.dumps(first) == json.dumps(second)
    assert first["$schema"].startswith("https://json-schema.org/")
    assert first["title"] == "relance scenario"
    assert set(first["required"]) == {"scenario", "trigger", "steps"}


def test_schema_uses_the_yaml_keys_marketers_write() -> None:
    text = json.dumps(scenario_json_schema())
    for key in ('"if"', '"else"', '"from"', '"not"'):
        assert key in text
    for key in ('"if_"', '"else_"', '"from_"', '"not_"'):
        assert key not in text
    step_properties = {
        name for definition in scenario_json_schema()["$defs"].values() for name in definition.get("properties", {})
    }
    assert set(STEP_TAGS) <= step_properties
