"""Golden scenario files: valid ones load clean, invalid ones give exactly their `# expect:` lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from relance.scenario.model import CONDITION_TAGS, STEP_TAGS, EventTrigger, ReentryAfter, Scenario, SegmentTrigger
from relance.scenario.validate import validate_texts

GOLDEN = Path(__file__).parent.parent / "scenarios"
VALID = sorted((GOLDEN / "valid").glob("*.yaml"))
INVALID = sorted((GOLDEN / "invalid").glob("*.yaml"))
TEMPLATES = {
    "welcom": ["template 'welcom' not found: no templates/emails/welcom.mjml (did you mean 'welcome'?)"],
    "broken-alert": ["template 'broken-alert' does not compile: line 3: unclosed <mj-text>"],
}
LEAD_ONLY = {  # what only an email to a lead must show
    "bare-promo": ["template 'bare-promo' is sent to leads but shows no unsubscribe link"],
}


def fake_check_template(name: str, *, to_lead: bool = False) -> list[str]:
    return TEMPLATES.get(name, []) + (LEAD_ONLY.get(name, []) if to_lead else [])


def expected_lines(text: str) -> list[str]:
    return [line.removeprefix("# expect: ") for line in text.splitlines() if line.startswith("# expect: ")]


@pytest.fixture(scope="module")
def valid_scenarios() -> dict[str, Scenario]:
    texts = {path.name: path.read_text(encoding="utf-8") for path in VALID}
    scenarios, names, problems = validate_texts(texts, check_template=fake_check_template)
    assert [str(problem) for problem in problems] == []
    assert sorted(names.values()) == sorted(texts)
    return scenarios


def test_valid_files_load_without_problems(valid_scenarios: dict[str, Scenario]) -> None:
    assert len(valid_scenarios) == len(VALID) >= 3


def _walk(value: Any) -> Any:
    yield value
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name))


def test_valid_files_cover_every_step_condition_trigger_and_reentry(valid_scenarios: dict[str, Scenario]) -> None:
    found = [node for scenario in valid_scenarios.values() for node in _walk(scenario)]
    kinds = {type(node) for node in found}
    assert set(STEP_TAGS.values()) <= kinds
    assert set(CONDITION_TAGS.values()) <= kinds
    assert {EventTrigger, SegmentTrigger, ReentryAfter} <= kinds
    assert {"never", "always"} <= {s.reentry for s in valid_scenarios.values() if isinstance(s.reentry, str)}
    assert any(getattr(node, "window", None) for node in found)
    assert any(getattr(node, "within", None) for node in found)
    assert any(getattr(node, "link", None) for node in found)
    assert any(getattr(node, "where", None) for node in found)


def test_every_invalid_file_states_what_it_expects() -> None:
    assert len(INVALID) >= 15
    for path in INVALID:
        assert expected_lines(path.read_text(encoding="utf-8")), f"{path.name} has no `# expect:` line"


@pytest.mark.parametrize("path", INVALID, ids=[path.stem for path in INVALID])
def test_invalid_file_reports_exactly_its_expected_problems(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    _, _, problems = validate_texts({path.name: text}, check_template=fake_check_template)
    assert [str(problem).removeprefix(f"{path.name}:") for problem in problems] == expected_lines(text)
    assert all(problem.path == path.name for problem in problems)
