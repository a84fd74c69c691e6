"""The graph and content pass: every problem of a scenario, or of many files, at once."""

from __future__ import annotations

from textwrap import dedent

from relance.scenario.loader import load_scenario_text
from relance.scenario.validate import validate_scenario, validate_texts

HEAD = "scenario: demo\ntrigger: {event: downloaded}\nsteps:\n"


def problems_of(steps: str, *, head: str = HEAD, **options: object) -> list[str]:
    """Validate a scenario whose steps start on line 4."""
    scenario, positions, problems = load_scenario_text(head + dedent(steps).lstrip("\n"), "s.yaml")
    assert problems == [], problems
    return [str(p) for p in validate_scenario(scenario, positions, path="s.yaml", **options)]


def test_a_loop_through_a_wait_is_fine() -> None:
    assert problems_of("""
        - {id: letter, send: newsletter, subject: Hi}
        - {id: month, wait: 4w}
        - {id: again?, if: {temperature: cold}, then: letter}
    """) == []


def test_a_step_that_goes_to_itself_without_waiting_is_a_loop() -> None:
    assert problems_of("""
        - {id: ping, send: hello, subject: Hi, next: ping}
    """) == ["s.yaml:4:3: step ping: loop ping -> ping has no wait in it"]


def test_a_loop_through_wait_until_counts_as_waiting() -> None:
    assert problems_of("""
        - {id: hello, send: hello, subject: Hi}
        - {id: watch, wait_until: {clicked: hello}, timeout: 3d, on_timeout: hello, next: hello}
    """) == []


def test_a_wait_elsewhere_in_the_loop_group_does_not_excuse_a_tighter_loop() -> None:
    assert problems_of("""
        - {id: a, send: hello, subject: Hi}
        - {id: b, if: {opened: a}, then: a, else: pause}
        - {id: pause, wait: 1d, next: a}
    """) == ["s.yaml:4:3: step a: loop a -> b -> a has no wait in it"]


def test_dangling_next_on_timeout_and_split_variant_name_their_key_and_strand_what_follows() -> None:
    assert problems_of("""
        - {id: hello, send: hello, subject: Hi, next: paus}
        - {id: pause, wait_until: {opened: hello}, timeout: 3d, on_timeout: nowhere}
        - id: ab
          split: {a: 50, b: 50}
          a: pause
          b: gone
    """) == [
        "s.yaml:4:41: step hello: `next: paus` names no step (did you mean 'pause'?)",
        "s.yaml:5:3: step pause: unreachable: no path from the first step leads here",
        "s.yaml:5:57: step pause: `on_timeout: nowhere` names no step",
        "s.yaml:6:3: step ab: unreachable: no path from the first step leads here",
        "s.yaml:9:3: step ab: `b: gone` names no step",
    ]


def test_duplicate_ids_are_reported_without_a_graph_pass() -> None:
    assert problems_of("""
        - {id: a, send: hello, subject: Hi, next: a}
        - {id: a, wait: 1d}
        - {id: orphan, end: true}
    """) == ["s.yaml:5:4: step a: duplicate step id 'a' (already used on line 4)"]


def test_conditions_on_unknown_or_non_send_steps_anywhere_are_reported() -> None:
    head = (
        "scenario: demo\n"
        "trigger: {segment: {any: [{tag: x}, {opened: pause}]}}\n"
        "exit_when:\n"
        "  - all: [{clicked: nope}]\n"
        "steps:\n"
    )
    assert problems_of("""
        - {id: hello, send: hello, subject: Hi}
        - {id: pause, wait_until: {not: {clicked: hello}}, timeout: 2d}
        - {id: check, if: {opened: pause}, then: hello}
    """, head=head) == [
        "s.yaml:2:38: `opened: pause` names a wait_until step, which sends no email",
        "s.yaml:4:12: `clicked: nope` names no step",
        "s.yaml:8:20: step check: `opened: pause` names a wait_until step, which sends no email",
    ]


def test_enroll_is_checked_only_when_known_scenarios_are_given() -> None:
    steps = "- {id: move, enroll: other}\n"
    assert problems_of(steps) == []
    assert problems_of(steps, known_scenarios={"demo", "other"}) == []
    assert problems_of(steps, known_scenarios={"demo", "others"}) == [
        "s.yaml:4:14: step move: `enroll: other` names no scenario (did you mean 'others'?) (known: demo, others)"
    ]


def test_jinja_errors_in_notify_subjects_and_templates_of_notify_are_checked() -> None:
    checked: list[str] = []

    def check(name: str, *, to_lead: bool) -> list[str]:
        checked.append(f"{name} to_lead={to_lead}")
        return [f"template '{name}' not found"] if name == "alert" else []

    assert problems_of("""
        - {id: hello, send: welcome, subject: "{{ lead.first_name }}"}
        - id: tell
          notify: {email: a@example.com, template: alert, subject: "{% for %}"}
    """, check_template=check) == [
        "s.yaml:6:34: step tell: template 'alert' not found",
        "s.yaml:6:51: step tell: `subject:` Jinja syntax error: Expected an expression, got 'end of statement block'",
    ]
    assert checked == ["welcome to_lead=True", "alert to_lead=False"]  # sends reach leads, notify reaches staff


def test_without_a_template_checker_templates_are_not_checked() -> None:
    assert problems_of("- {id: hello, send: does-not-exist, subject: Hi}\n") == []


TEXTS = {
    "a.yaml": HEAD + "  - {id: go, enroll: b}\n",
    "b.yaml": "scenario: b\ntrigger: {event: downloaded}\nsteps:\n  - {id: go, enroll: demo}\n",
    "c.yaml": HEAD + "  - {id: stop, end: true}\n",
    "d.yaml": "scenario: broken\ntrigger: {event: downloaded}\nsteps:\n  - {id: x, send: y}\n",
    "e.yaml": HEAD.replace("demo", "e") + "  - {id: go, enroll: broken}\n",
}


def test_validate_texts_reports_duplicate_scenario_ids_across_files() -> None:
    scenarios, names, problems = validate_texts(TEXTS)
    assert [str(p) for p in problems] == [
        "c.yaml:1:1: scenario id 'demo' is already used by a.yaml",
        "d.yaml:4:5: step x: missing `subject:`",
    ]
    assert sorted(scenarios) == ["b", "demo", "e"]
    assert names == {"b": "b.yaml", "demo": "a.yaml", "e": "e.yaml"}
    assert scenarios["demo"].steps[0].id == "go"


def test_validate_texts_checks_enroll_against_every_file() -> None:
    texts = {**TEXTS, "f.yaml": HEAD.replace("demo", "f") + "  - {id: go, enroll: newsletter}\n"}
    problems = [str(p) for p in validate_texts(texts)[2]]
    assert "f.yaml:4:14: step go: `enroll: newsletter` names no scenario (known: b, broken, demo, e, f)" in problems
    assert not any(p.startswith(("a.yaml", "b.yaml", "e.yaml")) for p in problems)


def test_a_step_that_does_not_parse_still_counts_for_targets_reachability_and_loops() -> None:
    text = HEAD + dedent("""\
        - {id: ask, if: {tag: vip}, then: broken, else: hello}
        - {id: hello, send: hello, subject: Hi, next: nowhere}
        - {id: broken, wait: 3 jours}
        - {id: after, score: +1, next: broken}
    """).replace("- {", "  - {")
    problems = [str(p) for p in validate_texts({"s.yaml": text})[2]]
    assert problems == [
        "s.yaml:5:43: step hello: `next: nowhere` names no step",  # checked although another step did not parse
        "s.yaml:6:18: step broken: bad duration '3 jours': expected a positive number and a unit, like 45m, 2h, 3d or 1w",
    ]  # `then: broken` names a step, `after` is reached through it, the loop through it is not blamed


def test_the_golden_file_of_every_kind_reports_each_problem_once_in_one_run() -> None:
    from tests.scenario.test_golden import GOLDEN, expected_lines, fake_check_template

    path = GOLDEN / "invalid" / "every-kind-at-once.yaml"
    text = path.read_text(encoding="utf-8")
    problems = [str(p) for p in validate_texts({path.name: text}, check_template=fake_check_template)[2]]
    assert len(problems) == len(set(problems)) == len(expected_lines(text)) >= 20
    kinds = ("is not allowed", "unknown key", "missing `", "bad duration", "a step needs one of", "duplicate step id",
             "names no step", "unreachable", "has no wait in it", "Jinja syntax error", "not found", "unsubscribe link",
             "does not compile", "sends no email", "names no scenario", "notify takes")
    assert [kind for kind in kinds if not any(kind in p for p in problems)] == []
