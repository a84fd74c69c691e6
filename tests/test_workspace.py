"""The scenarios folder read as a workspace: read once per content, read again after any edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from relance.settings import Settings
from tests.shipped import shipped_copy
from relance.workspace import ScenarioError, load_workspace



@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return shipped_copy(tmp_path)


def test_an_unchanged_folder_is_not_read_again(settings):
    assert load_workspace(settings) is load_workspace(settings)


def test_an_edit_of_the_same_size_at_once_is_read(settings):
    path = settings.scenarios_dir / "whitepaper-nurture.yaml"
    first = load_workspace(settings)
    text = path.read_text(encoding="utf-8")
    assert "wait: 3d" in text
    path.write_text(text.replace("wait: 3d", "wait: 4d", 1), encoding="utf-8")  # same size, same clock tick

    second = load_workspace(settings)

    assert second is not first
    waits = [s.wait for s in second.plans["whitepaper-nurture"].scenario.steps if getattr(s, "wait", None)]
    assert waits and waits[0].days == 4


def test_a_template_broken_after_a_load_breaks_only_the_scenario_that_sends_it(settings):
    load_workspace(settings)
    (settings.templates_dir / "whitepaper-followup.mjml").write_text("<mjml><mj-body>{% if %}</mj-body></mjml>")

    workspace = load_workspace(settings)

    assert sorted(workspace.plans) == ["monthly-newsletter", "re-engagement"]
    assert list(workspace.waiting) == ["whitepaper-nurture"]
    assert any("whitepaper-followup" in str(problem) for problem in workspace.waiting["whitepaper-nurture"].problems)


def test_a_scoring_edit_is_read(settings):
    first = load_workspace(settings)
    scoring = settings.scenarios_dir / "scoring.yaml"
    scoring.write_text(scoring.read_text(encoding="utf-8").replace("demo_requested: 50", "demo_requested: 70", 1))

    assert load_workspace(settings) is not first
    assert load_workspace(settings).scoring.behaviour["demo_requested"] == 70


def validate(settings, monkeypatch, *paths: str):
    from typer.testing import CliRunner

    from relance.cli import app
    from relance.settings import get_settings

    monkeypatch.setenv("RELANCE_SCENARIOS_DIR", str(settings.scenarios_dir))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(settings.templates_dir))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, ["validate", *paths], catch_exceptions=False)
    finally:
        get_settings.cache_clear()


def test_validating_one_file_knows_the_other_scenarios_of_its_folder_without_reporting_their_problems(settings, monkeypatch):
    newsletter = settings.scenarios_dir / "monthly-newsletter.yaml"
    newsletter.write_text(newsletter.read_text(encoding="utf-8").replace("wait: 4w", "wait: 4 semaines"), encoding="utf-8")

    result = validate(settings, monkeypatch, str(settings.scenarios_dir / "whitepaper-nurture.yaml"))

    assert result.exit_code == 0, result.output
    assert "ok: 1 scenario(s) valid: whitepaper-nurture" in result.stdout
    assert "monthly-newsletter" not in result.output


def test_a_file_outside_the_folder_may_enroll_into_the_scenarios_folder_and_an_unknown_name_lists_them(settings, monkeypatch, tmp_path):
    draft = tmp_path / "drafts" / "draft.yaml"
    draft.parent.mkdir()
    draft.write_text("scenario: draft\ntrigger: {event: downloaded}\nsteps:\n  - {id: pick, if: {tag: vip}, then: other}\n"
                     "  - {id: go, enroll: monthly-newsletter}\n  - {id: other, enroll: montly-newsletter}\n", encoding="utf-8")

    result = validate(settings, monkeypatch, str(draft))

    assert result.exit_code == 1
    assert [line for line in result.stdout.splitlines() if not line.startswith("internal template ")] == [
        f"{draft}:6:17: step other: `enroll: montly-newsletter` names no scenario (did you mean 'monthly-newsletter'?) "
        "(known: draft, monthly-newsletter, re-engagement, whitepaper-nurture)"]


def test_validate_reports_shape_graph_and_template_problems_of_one_file_in_one_run(settings, monkeypatch):
    """Once needed four runs: the shape problems hid the graph pass, which hid the template checks."""
    broken = settings.scenarios_dir / "broken.yaml"
    broken.write_text(
        "scenario: broken\ntrigger: {event: downloaded}\nreentry: sometimes\nsteps:\n"
        "  - id: hello\n    send: welcom\n    subject: Bonjour\n"     # 5-7: a template that is not there
        "  - id: pause\n    wait: 3 jours\n"                          # 8-9: a bad duration
        "  - id: check\n    if: {opened: pause}\n    then: nowhere\n"  # 10-12: a wait sends nothing, a dangling target
        "  - id: stop\n    end: true\n"
        "  - id: lonely\n    score: +5\n",                            # 15-16: unreachable
        encoding="utf-8")

    result = validate(settings, monkeypatch, str(broken))

    assert result.exit_code == 1
    lines = [line.removeprefix(f"{broken}:") for line in result.stdout.splitlines() if not line.startswith("internal template ")]
    assert lines == [
        "3:1: `reentry: sometimes` is not allowed: expected never, always or {after: DURATION}",
        f"6:5: step hello: template 'welcom' not found in {settings.templates_dir} (welcom.mjml)",
        "9:5: step pause: bad duration '3 jours': expected a positive number and a unit, like 45m, 2h, 3d or 1w",
        "11:10: step check: `opened: pause` names a wait step, which sends no email",
        "12:5: step check: `then: nowhere` names no step",
        "15:5: step lonely: unreachable: no path from the first step leads here",
    ]


def test_a_file_whose_yaml_does_not_parse_is_still_known_by_its_scenario_line_and_the_others_load(settings):
    path = settings.scenarios_dir / "whitepaper-nurture.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("  where: {asset: livre-blanc-leads}",
                                                             "  where: {asset: livre-blanc-leads"), encoding="utf-8")

    workspace = load_workspace(settings)

    assert sorted(workspace.plans) == ["monthly-newsletter", "re-engagement"]
    assert list(workspace.waiting) == ["whitepaper-nurture"]
    assert [p.message.split(":")[0] for p in workspace.waiting["whitepaper-nurture"].problems] == ["bad YAML"]


def test_a_broken_scoring_yaml_still_stops_everything_it_names_only_its_own_problems(settings):
    (settings.scenarios_dir / "whitepaper-nurture.yaml").write_text("scenario: whitepaper-nurture\n", encoding="utf-8")
    (settings.scenarios_dir / "scoring.yaml").write_text("mql: {score_at_least: beaucoup}\n", encoding="utf-8")

    with pytest.raises(ScenarioError) as error:
        load_workspace(settings)

    assert [p.path for p in error.value.problems] == [str(settings.scenarios_dir / "scoring.yaml")]
