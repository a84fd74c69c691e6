"""The scenarios folder read as a library: read once per content, read again after any edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from relance.library import ScenarioError, load_library
from relance.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    shutil.copytree(PROJECT / "scenarios", tmp_path / "scenarios")
    shutil.copytree(PROJECT / "templates" / "emails", tmp_path / "templates")
    return Settings(scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                    database_url=f"sqlite:///{tmp_path / 'relance.db'}")


def test_an_unchanged_folder_is_not_read_again(settings):
    assert load_library(settings) is load_library(settings)


def test_an_edit_of_the_same_size_at_once_is_read(settings):
    path = settings.scenarios_dir / "whitepaper-nurture.yaml"
    first = load_library(settings)
    text = path.read_text(encoding="utf-8")
    assert "wait: 3d" in text
    path.write_text(text.replace("wait: 3d", "wait: 4d", 1), encoding="utf-8")  # same size, same clock tick

    second = load_library(settings)

    assert second is not first
    waits = [s.wait for s in second.plans["whitepaper-nurture"].scenario.steps if getattr(s, "wait", None)]
    assert waits and waits[0].days == 4


def test_a_template_broken_after_a_load_is_reported(settings):
    load_library(settings)
    (settings.templates_dir / "whitepaper-followup.mjml").write_text("<mjml><mj-body>{% if %}</mj-body></mjml>")

    with pytest.raises(ScenarioError) as error:
        load_library(settings)

    assert "whitepaper-followup" in str(error.value)


def test_a_scoring_edit_is_read(settings):
    first = load_library(settings)
    scoring = settings.scenarios_dir / "scoring.yaml"
    scoring.write_text(scoring.read_text(encoding="utf-8").replace("demo_requested: 50", "demo_requested: 70", 1))

    assert load_library(settings) is not first
    assert load_library(settings).scoring.behaviour["demo_requested"] == 70
