"""The docs stand on their own: the reference covers the whole language, and every link leads somewhere real.

The lists below are read from the models themselves (the pydantic unions and fields), so a key added
to the language without a word in docs/language.md makes this fail.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from relance.composing import template_context
from relance.scenario.model import EVENT_TYPES, STAGES, Condition, Reentry, Scenario, Step, Trigger
from relance.scoring.config import ScoringConfig
from relance.settings import Settings
from relance.store.tables import Lead, Outbox

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = ROOT / "docs" / "language.md"


# --------------------------------------------------------------------------- reading the models


def tagged(union: Any) -> dict[str, type[BaseModel]]:
    """tag -> model of a discriminated union (`Step`, `Condition`, `Trigger`)."""
    inner = get_args(union)[0]
    found = {}
    for member in get_args(inner):
        model, *metadata = get_args(member)
        found[next(m.tag for m in metadata if hasattr(m, "tag"))] = model
    return found


def keys_of(model: type[BaseModel]) -> set[str]:
    """The YAML keys of a model (aliases where it has them: `if`, `else`, `from`, `not`)."""
    return {field.alias or name for name, field in model.model_fields.items()}


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's annotation holds (`Decay | None`, `list[RevenueTier]`, `Union[str, Visited]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in nested_models(arg)]


STEPS = tagged(Step)
CONDITIONS = tagged(Condition)
TRIGGERS = tagged(Trigger)


# --------------------------------------------------------------------------- reading the reference


def sections(text: str, level: str) -> dict[str, str]:
    """Heading -> its text (up to the next heading of the same or a higher level)."""
    depth = len(level)
    found: dict[str, str] = {}
    current, lines, fenced = None, [], False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"^(#+) (.*)$", line)  # a `# comment` in a YAML example is no heading
        if heading and len(heading.group(1)) <= depth:
            if current is not None:
                found[current] = "\n".join(lines)
            current, lines = (heading.group(2) if len(heading.group(1)) == depth else None), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        found[current] = "\n".join(lines)
    return found


@pytest.fixture(scope="module")
def reference() -> str:
    return LANGUAGE.read_text(encoding="utf-8")


def section(text: str, level: str, starts: str) -> str:
    matching = [body for heading, body in sections(text, level).items() if heading.startswith(starts)]
    assert matching, f"docs/language.md has no section {level} {starts}..."
    return matching[0]


def written_as_key(text: str, key: str) -> bool:
    """`key:` in a YAML example or a table, not inside a longer word."""
    return re.search(rf"(?<![\w-]){re.escape(key)}:", text) is not None


# --------------------------------------------------------------------------- the language is all there


def test_the_reference_has_a_section_for_every_step_kind_and_shows_every_option(reference):
    steps = section(reference, "##", "Steps")
    headings = set(sections(steps, "###"))
    for kind, model in STEPS.items():
        assert f"`{kind}`" in {h.split(":")[0].strip() for h in headings}, f"no `### `{kind}`` section in docs/language.md"
        body = section(steps, "###", f"`{kind}`")
        for key in keys_of(model) - {"id", "next"}:
            assert written_as_key(body, key), f"step `{kind}`: option `{key}:` is not shown in its section"
        parts = {m for f in model.model_fields.values() for m in nested_models(f.annotation)} - set(CONDITIONS.values())
        for sub in parts:  # window:, set:, notify: (conditions have their own section)
            for key in keys_of(sub):
                assert written_as_key(body, key), f"step `{kind}`: `{key}:` of {sub.__name__} is not shown in its section"
    assert written_as_key(steps, "id") and written_as_key(steps, "next")


def test_the_reference_lists_every_condition_and_its_options(reference):
    conditions = section(reference, "##", "Conditions")
    for kind, model in CONDITIONS.items():
        assert f"{{{kind}:" in conditions, f"condition `{kind}` is not in the conditions section"
        for key in keys_of(model):
            assert written_as_key(conditions, key), f"condition `{kind}`: `{key}:` is not shown"
    assert "since the lead entered" in conditions.lower()


def test_the_reference_shows_every_trigger_form_reentry_and_top_level_key(reference):
    scenario_file = section(reference, "##", "A scenario file")
    for key in keys_of(Scenario):
        assert f"`{key}:`" in scenario_file, f"scenario key `{key}:` is not in the table of a scenario file"
    triggers = section(scenario_file, "###", "`trigger:`")
    for form, model in TRIGGERS.items():
        for key in keys_of(model):
            assert written_as_key(triggers, key), f"trigger form `{form}`: `{key}:` is not shown"
    assert "said_later" in triggers
    reentry = section(scenario_file, "###", "`reentry:`")
    values = [arg for member in get_args(Reentry) for arg in (get_args(member) if get_origin(member) is not None else ())]
    models = [member for member in get_args(Reentry) if isinstance(member, type) and issubclass(member, BaseModel)]
    for value in values:
        assert f"reentry: {value}" in reentry, f"reentry `{value}` is not shown"
    for model in models:
        for key in keys_of(model):
            assert written_as_key(reentry, key), f"reentry `{{{key}: ...}}` is not shown"


def test_the_reference_explains_every_scoring_key_with_its_parts(reference):
    scoring = section(reference, "##", "scenarios/scoring.yaml")
    for name, field in ScoringConfig.model_fields.items():
        body = section(scoring, "###", f"`{name}:`")
        assert written_as_key(body, name), f"scoring.yaml `{name}:` has no example in its section"
        for model in nested_models(field.annotation):
            for key in keys_of(model):
                assert written_as_key(body, key), f"scoring.yaml `{name}:`: `{key}:` is not shown in its section"


def test_the_reference_lists_every_event_type_and_stage(reference):
    events = section(reference, "##", "Events")
    for event_type in EVENT_TYPES:
        assert f"`{event_type}`" in events, f"event type `{event_type}` is not in the events section"
    stages = section(events, "###", "Stages")
    for stage in STAGES:
        assert f"`{stage}`" in stages, f"stage `{stage}` is not in the stages section"


def test_the_reference_lists_every_variable_the_runner_gives_templates(reference):
    templates = section(reference, "##", "Templates")
    context = template_context(Lead(id=1, email="lea@acme.example"), Settings(), Outbox(id=1, kind="lead"),
                               unsubscribe="https://relance.example/u/x")
    for key, value in context.items():
        if key == "lead":
            for part in value:
                assert f"`lead.{part}`" in templates, f"template variable `lead.{part}` is not documented"
        else:
            assert f"`{key}`" in templates, f"template variable `{key}` is not documented"


# --------------------------------------------------------------------------- links


def repo_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def markdown_files() -> list[Path]:
    return [path for path in repo_files() if path.suffix == ".md"]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # a binary file names no path


def inside_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CLIMB = re.compile(r"(?:\.\./)+[\w.-][\w./-]*")


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(heading) for level in ("#", "##", "###", "####") for heading in sections(path.read_text(encoding="utf-8"), level)}


def test_every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist():
    checked = 0
    for page in markdown_files():
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part) if file_part else page
            where = f"{page.relative_to(ROOT)} links to {target}"
            assert not file_part.startswith("/"), f"{where}: an absolute path, outside a clone"
            assert inside_repo(linked), f"{where}: outside the repository"
            assert linked.exists(), f"{where}: no such file"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{where}: no such heading"
            checked += 1
    assert checked > 10  # README.md and docs/*.md link to each other


def test_no_file_points_at_a_path_outside_the_repository():
    for path in repo_files():
        text = text_of(path)
        for climb in _CLIMB.findall(text or ""):
            assert inside_repo(path.parent / climb), f"{path.relative_to(ROOT)} names {climb}, outside the repository"


def test_every_setting_is_in_the_readme_table():
    from relance.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [env for name, f in Settings.model_fields.items()
               if f"| `{(env := f.alias or 'RELANCE_' + name.upper())}` |" not in readme]
    assert missing == []
