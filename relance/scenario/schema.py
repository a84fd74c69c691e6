"""The JSON Schema of the scenario language, for editors' autocompletion."""

from __future__ import annotations

from typing import Any

from relance.scenario.model import Scenario

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def scenario_json_schema() -> dict[str, Any]:
    """The scenario YAML's JSON Schema; the same dict on every call."""
    schema = Scenario.model_json_schema(by_alias=True)
    return {"$schema": SCHEMA_DIALECT, "title": "relance scenario", **{k: v for k, v in schema.items() if k != "title"}}

