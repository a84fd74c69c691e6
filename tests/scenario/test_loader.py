"""Loading one scenario text: shape errors located at the key a marketer must fix."""

from __future__ import annotations

from textwrap import dedent

from relance.scenario.loader import load_scenario_text


def load(text: str) -> tuple[object, object, list[str]]:
    scenario, positions, problems = load_scenario_text(dedent(text).lstrip("\n"), "s.yaml")
    return scenario, positions, [str(problem) for problem in problems]


def test_a_valid_text_loads_with_positions_of_steps_and_keys() -> None:
    scenario, positions, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - id: hello
            send: welcome
            subject: Bonjour
          - id: pause
            wait: 3d
    """)
    assert problems == []
    assert scenario.steps[1].wait.days == 3
    assert positions.step(1) == (7, 5)
    assert positions.step(0, "subject") == (6, 5)
    assert positions.at("steps", 1, "no-such-key") == (7, 5)
    assert positions.scenario_name == "demo"


def test_yaml_scalars_become_plain_python_values() -> None:
    scenario, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded, where: {size: 2.5, count: 3, ok: true}}
        steps:
          - {id: bump, score: +15}
    """)
    assert problems == []
    assert type(scenario.trigger.where["size"]) is float
    assert type(scenario.trigger.where["count"]) is int
    assert scenario.trigger.where["ok"] is True
    assert scenario.steps[0].score == 15


def test_unknown_key_in_a_nested_condition_is_located_at_that_key() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - id: hello
            send: welcome
            subject: Bonjour
          - id: check
            if: {not: {opened: hello, witin: 3d}}
            then: hello
    """)
    assert problems == ["s.yaml:8:31: step check: unknown key 'witin' (did you mean 'within'?)"]


def test_unknown_condition_in_a_segment_trigger_suggests_the_closest_one() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger:
          segment:
            all:
              - opned: x
        steps:
          - {id: bye, end: true}
    """)
    assert problems == [
        "s.yaml:5:9: a condition needs one of opened, clicked, downloaded, visited, event, score_at_least, "
        "grade_at_least, temperature, stage_in, tag, field, all, any, not: unknown key 'opned' (did you mean 'opened'?)"
    ]


def test_a_bad_reentry_lists_every_allowed_form_once() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        reentry: sometimes
        steps:
          - {id: bye, end: true}
    """)
    assert problems == ["s.yaml:3:1: `reentry: sometimes` is not allowed: expected never, always or {after: DURATION}"]


def test_a_mistyped_reentry_mapping_points_at_the_mistyped_key() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        reentry: {aftr: 90d}
        steps:
          - {id: bye, end: true}
    """)
    assert problems == ["s.yaml:3:11: unknown key 'aftr' (did you mean 'after'?)"]


def test_a_value_of_neither_allowed_type_is_reported_once() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - id: label
            set: {tag: 5}
    """)
    assert problems == ["s.yaml:5:11: step label: `tag: 5` should be a valid string or a valid list"]


def test_a_misspelled_key_is_one_problem_not_also_a_missing_one() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        stepz: []
    """)
    assert problems == ["s.yaml:3:1: unknown key 'stepz' (did you mean 'steps'?)"]


def test_a_missing_key_with_no_lookalike_is_reported_at_its_mapping() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - id: wait-open
            wait_until: {opened: wait-open}
          - id: bye
            end: true
    """)
    assert problems == ["s.yaml:4:5: step wait-open: missing `timeout:`"]


def test_a_bad_trigger_says_both_forms() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {evnt: downloaded}
        steps:
          - {id: bye, end: true}
    """)
    assert problems == [
        "s.yaml:2:11: a trigger is either {event: TYPE} or {segment: CONDITION}: unknown key 'evnt' (did you mean 'event'?)"
    ]


def test_model_rules_keep_their_own_words() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - id: check
            if: {tag: vip}
          - id: ab
            split: {a: 50, b: 50}
            a: check
    """)
    assert problems == [
        "s.yaml:4:5: step check: an if step needs `then:` or `else:` (or both)",
        "s.yaml:6:5: step ab: split variant 'b' has no target step: add `b: STEP_ID`",
    ]


def test_end_false_says_what_is_allowed() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - {id: bye, end: false}
    """)
    assert problems == ["s.yaml:4:15: step bye: `end: false` is not allowed: expected true"]


def test_an_empty_file_or_a_list_is_not_a_scenario() -> None:
    assert load("")[2] == [
        "s.yaml:1:1: a scenario file is a mapping with `scenario:`, `trigger:` and `steps:`, not an empty file"
    ]
    assert load("- a\n- b\n")[2] == [
        "s.yaml:1:1: a scenario file is a mapping with `scenario:`, `trigger:` and `steps:`, not a list"
    ]


def test_a_duplicated_yaml_key_is_a_yaml_problem_at_its_line() -> None:
    scenario, _, problems = load("""
        scenario: demo
        scenario: again
        trigger: {event: downloaded}
        steps:
          - {id: bye, end: true}
    """)
    assert scenario is None
    assert len(problems) == 1 and problems[0].startswith("s.yaml:2:1: bad YAML: ")
    assert "duplicate key" in problems[0]


def test_pattern_errors_say_how_to_write_the_value() -> None:
    _, _, problems = load("""
        scenario: Mon Scénario
        trigger: {event: Form-Submitted}
        steps:
          - id: pause
            wait: 1d
            window: {hours: 9h-18h}
          - id: hook
            notify: {webhook: crm.example.com}
    """)
    assert problems == [
        "s.yaml:1:1: `scenario: Mon Scénario` is not a valid scenario id: use lowercase letters, digits and dashes, "
        "like whitepaper-nurture",
        "s.yaml:2:11: `event: Form-Submitted` is not a valid event type: use lowercase letters, digits and "
        "underscores, like form_submitted",
        "s.yaml:6:14: step pause: `hours: 9h-18h` is not a time range: write HH:MM-HH:MM, like 09:00-18:00",
        "s.yaml:8:14: step hook: `webhook: crm.example.com` is not a web address: it must start with http:// or https://",
    ]


def test_a_wrongly_typed_value_is_shown_with_its_key() -> None:
    _, _, problems = load("""
        scenario: demo
        trigger: {event: downloaded}
        steps:
          - id: ab
            split: {a: lots, b: 50}
            a: x
            b: x
          - {id: x, send: hello, subject: [Hi]}
    """)
    assert problems == [
        "s.yaml:5:13: step ab: `a: lots` should be a valid integer, unable to parse string as an integer",
        "s.yaml:8:26: step x: `subject:` should be a valid string",
    ]
