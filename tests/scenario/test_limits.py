"""What a scenario file may hold: every limit refused at the line and column it is passed, never a hang,
a RecursionError or an OverflowError; files that cannot be read as UTF-8 are located too."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from relance.scenario.loader import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES, load_model_text, load_scenario_text
from relance.scenario.model import MAX_DURATION, MAX_POINTS, parse_duration
from relance.scoring.config import ScoringConfig
from relance.settings import Settings
from tests.shipped import shipped_copy
from relance.workspace import load_workspace, read_scoring, read_source, validate_paths

HEAD = "scenario: limits\ntrigger: {event: downloaded}\n"
END = "steps:\n  - id: bye\n    end: true\n"


def problems_of(text: str) -> list[str]:
    _scenario, _positions, problems = load_scenario_text(text, "s.yaml")
    return [str(problem) for problem in problems]


def bomb(levels: int = 9) -> str:
    """The billion laughs: each level lists the one before nine times."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "description: x\nbombs:\n" + "".join(f"  {line}\n" for line in lines)


def test_an_alias_bomb_is_refused_at_the_alias_that_passes_the_limit() -> None:
    problems = problems_of(HEAD + END + bomb())
    assert problems == [f"s.yaml:12:12: aliases (*name) expand to more than {MAX_ALIAS_VALUES:,} values (*l3 here): "
                        "write the values out, or use fewer aliases"]


def test_a_few_aliases_still_work() -> None:
    text = HEAD + "exit_when:\n  - &bought {event: demo_requested}\nsteps:\n  - id: check\n    if: *bought\n    then: bye\n" \
        "  - id: bye\n    end: true\n"
    scenario, _positions, problems = load_scenario_text(text, "s.yaml")
    assert problems == [] and scenario.steps[0].if_ == scenario.exit_when[0]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    assert problems_of(HEAD + END + "loop: &me [1, *me]\n") == [
        "s.yaml:6:15: alias *me is used inside its own anchor &me: it would never end"]


def test_aliases_chained_deeper_than_the_limit_are_refused() -> None:
    chain = "chain:\n  c0: &c0 [1]\n" + "".join(f"  c{i}: &c{i} [*c{i - 1}]\n" for i in range(1, MAX_DEPTH + 5))
    [problem] = problems_of(HEAD + END + chain)
    assert problem.endswith(f"nests the file more than {MAX_DEPTH} levels deep")


@pytest.mark.parametrize("style", ["flow", "block"])
def test_1500_nested_mappings_are_refused_where_the_limit_is_passed(style: str) -> None:
    if style == "flow":
        deep = "deep: " + "{a: " * 1500 + "1" + "}" * 1500 + "\n"
        where = f"6:{6 + 4 * MAX_DEPTH - 3}"  # the `{` that opens level MAX_DEPTH + 1 (the root mapping is level 1)
    else:
        deep = "deep:\n" + "".join("  " * level + "a:\n" for level in range(1, MAX_DEPTH + 10))
        where = f"{6 + MAX_DEPTH}:{2 * MAX_DEPTH + 1}"  # the mapping of the `a:` at level MAX_DEPTH + 1
    assert problems_of(HEAD + END + deep) == [f"s.yaml:{where}: nested more than {MAX_DEPTH} levels deep: no scenario needs that many"]


def test_conditions_nested_within_the_limit_load() -> None:
    condition = "{not: " * 20 + "{opened: mail}" + "}" * 20
    text = HEAD + f"steps:\n  - id: mail\n    send: x\n    subject: s\n  - id: check\n    if: {condition}\n    then: bye\n" \
        "  - id: bye\n    end: true\n"
    assert problems_of(text) == []


def test_a_number_too_long_to_be_read_is_refused_not_a_traceback() -> None:
    assert problems_of(HEAD + "steps:\n  - id: s\n    score: " + "9" * 5000 + "\n") == [
        "s.yaml:5:12: a number of 5000 digits is too long to be read (at most 30); quote it if it is text"]


def test_a_file_over_the_size_limit_is_refused_as_a_whole() -> None:
    assert problems_of(HEAD + END + "#" * MAX_FILE_BYTES) == ["s.yaml:1:1: the file is 256.1 KB: a scenario file may be 256 KB at most"]


def test_a_40_mb_file_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.write(HEAD.encode())
        stream.truncate(40_000_000)  # sparse: 40 MB on paper
    text, problem = read_source(path)
    assert text is None and str(problem) == f"{path}:1:1: the file is 40 MB: a scenario file may be 256 KB at most"


def test_bad_utf8_is_located_at_its_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes((HEAD + "description: Séminaire à Paris\n" + END).encode("latin-1"))
    text, problem = read_source(path)
    assert text is None
    assert str(problem) == f"{path}:3:15: not UTF-8 text (byte 0xe9 cannot be read): save the file as UTF-8"


def test_utf8_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff".encode() + (HEAD + "description: Séminaire\n" + END).encode())
    text, problem = read_source(path)
    assert problem is None and problems_of(text) == []


@pytest.mark.parametrize("written, message", [
    ("99999999999d", "bad duration '99999999999d': at most 3650d (ten years)"),
    ("3651d", "bad duration '3651d': at most 3650d (ten years)"),
    ("9" * 5000 + "m", f"bad duration '{'9' * 5000}m': at most 3650d (ten years)"),
    ("0d", "bad duration '0d': expected a positive number and a unit, like 45m, 2h, 3d or 1w"),
])
def test_durations_the_engine_cannot_hold_are_refused(written: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(written)
    assert str(raised.value) == message


def test_the_longest_duration_allowed_still_makes_a_date() -> None:
    assert parse_duration("3650d") == parse_duration("521w") - timedelta(days=7 * 521 - 3650) == MAX_DURATION


@pytest.mark.parametrize("written, shown", [("+1e20", "1e+20"), ("99999999999999999999", "99999999999999999999"),
                                            ("-2147483649", "-2147483649"), (".inf", "inf"), (f"+{MAX_POINTS + 1}", f"{MAX_POINTS + 1}")])
def test_scores_beyond_the_bound_are_refused_at_the_step(written: str, shown: str) -> None:
    assert problems_of(HEAD + f"steps:\n  - id: bump\n    score: {written}\n") == [
        f"s.yaml:5:5: step bump: {shown} points is out of range: a score counts at most 1,000,000 points either way"]


def test_the_largest_score_allowed_loads() -> None:
    scenario, _positions, problems = load_scenario_text(HEAD + f"steps:\n  - id: bump\n    score: -{MAX_POINTS}\n", "s.yaml")
    assert problems == [] and scenario.steps[0].score == -MAX_POINTS


def test_scoring_yaml_points_beyond_the_bound_are_refused() -> None:
    _config, _positions, problems = load_model_text("behaviour: {downloaded: 1e20}\nmql: {score_at_least: 5000000000}\n",
                                                    "scoring.yaml", ScoringConfig, shape="scoring")
    messages = [str(problem) for problem in problems]
    assert "scoring.yaml:1:13: 1e+20 points is out of range: a score counts at most 1,000,000 points either way" in messages
    assert "scoring.yaml:2:7: 5000000000 points is out of range: a score counts at most 1,000,000 points either way" in messages


# --------------------------------------------------------------------------- the folder: validate and tick


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return shipped_copy(tmp_path)


def test_a_file_that_is_not_utf8_does_not_run_and_the_others_do(settings: Settings) -> None:
    bad = settings.scenarios_dir / "seminar.yaml"
    bad.write_bytes(b"scenario: seminar\ntrigger: {event: downloaded}\ndescription: S\xe9minaire\n" + END.encode())
    workspace = load_workspace(settings)
    assert "whitepaper-nurture" in workspace.plans and "seminar" not in workspace.plans
    [broken] = workspace.broken
    assert (broken.name, [str(p) for p in broken.problems]) == (
        "seminar", [f"{bad}:3:15: not UTF-8 text (byte 0xe9 cannot be read): save the file as UTF-8"])


def test_validating_one_file_beside_an_alias_bomb_and_a_huge_file_reads_neither_whole(settings: Settings) -> None:
    (settings.scenarios_dir / "bomb.yaml").write_text(HEAD.replace("limits", "bomb") + END + bomb(), encoding="utf-8")
    with (settings.scenarios_dir / "huge.yaml").open("wb") as stream:
        stream.truncate(40_000_000)
    problems, names = validate_paths([settings.scenarios_dir / "whitepaper-nurture.yaml"], templates_dir=settings.templates_dir)
    assert problems == [] and list(names) == ["whitepaper-nurture"]


def test_a_scoring_yaml_that_is_not_utf8_is_located(settings: Settings) -> None:
    path = settings.scenarios_dir / "scoring.yaml"
    path.write_bytes(b"behaviour:\n  downloaded: 10 # t\xe9l\xe9chargement\n")
    _config, problems = read_scoring(settings.scenarios_dir)
    assert [str(p) for p in problems] == [f"{path}:2:21: not UTF-8 text (byte 0xe9 cannot be read): save the file as UTF-8"]
