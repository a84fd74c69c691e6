"""Bad scenario files, scoring files and templates, each through `relance validate` as a marketer runs it: one clear
line FILE:LINE:COL: (step ID:) message, exit code 1, no traceback, and nothing stored (validate opens no database).

A case is (id, the files written into a private copy of the shipped project, the line the answer must hold)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from relance.cli import app

HEAD = "scenario: case\ntrigger: {event: downloaded}\n"
END = "steps:\n  - id: bye\n    end: true\n"
SEND = HEAD + "steps:\n  - id: mail\n    send: t\n    subject: Bonjour\n"  # the step sending template t: `send:` at 5:5
MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section></mj-body></mjml>"
CASE, SCORING, TEMPLATE = "scenarios/case.yaml", "scenarios/scoring.yaml", "templates/t.mjml"
TOO_LONG = "one email may hold: a loop repeats too much, or a text is multiplied"
TOO_MANY = "stopped after 100,000 loop turns and calls: a loop or a macro repeats too much for one email"


def bomb() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "".join(line + "\n" for line in lines)


def step(body: str) -> str:
    """A scenario of one step written as `body` (indented under `- id: s`, its first key at 5:5)."""
    return HEAD + "steps:\n  - id: s\n" + "".join(f"    {line}\n" for line in body.splitlines())


def sends(template: str | bytes) -> dict[str, str | bytes]:
    return {CASE: SEND, TEMPLATE: template}


CASES: list[tuple[str, dict[str, str | bytes], str]] = [
    # ----------------------------------------------------------------- YAML that would explode once read
    ("alias-bomb", {CASE: HEAD + END + bomb()},
     "case.yaml:10:10: aliases (*name) expand to more than 10,000 values (*l3 here)"),
    ("alias-in-its-own-anchor", {CASE: HEAD + END + "x: &me [1, *me]\n"},
     "case.yaml:6:12: alias *me is used inside its own anchor &me: it would never end"),
    ("undefined-alias", {CASE: step("end: *nothing")}, "case.yaml:5:10: bad YAML: found undefined alias 'nothing'"),
    ("1500-nested-mappings", {CASE: HEAD + END + "x: " + "{a: " * 1500 + "1" + "}" * 1500 + "\n"},
     "case.yaml:6:200: nested more than 50 levels deep: no scenario needs that many"),
    ("1500-nested-lists", {CASE: HEAD + END + "x: " + "[" * 1500 + "]" * 1500 + "\n"},
     "case.yaml:6:53: nested more than 50 levels deep"),
    ("conditions-nested-too-deep", {CASE: step("if: " + "{not: " * 60 + "{tag: x}" + "}" * 60 + "\nthen: s")},
     "case.yaml:5:291: nested more than 50 levels deep"),
    ("40-mb-file", {CASE: HEAD.encode() + b"#" * (40_000_000 - len(HEAD))}, "case.yaml:1:1: the file is 40 MB: a scenario file may be 256 KB at most"),
    ("300-kb-file", {CASE: HEAD + END + "#" * 300_000 + "\n"}, "case.yaml:1:1: the file is 300.1 KB: a scenario file may be 256 KB at most"),
    ("number-of-5000-digits", {CASE: step("score: " + "9" * 5000)},
     "case.yaml:5:12: a number of 5000 digits is too long to be read (at most 30); quote it if it is text"),
    # ----------------------------------------------------------------- not UTF-8 text, characters YAML refuses
    ("invalid-utf8", {CASE: HEAD.encode() + b'description: "\xff\xfe bad"\n' + END.encode()},
     "case.yaml:3:15: not UTF-8 text (byte 0xff cannot be read): save the file as UTF-8"),
    ("latin-1", {CASE: (HEAD + "description: Séminaire\n" + END).encode("latin-1")},
     "case.yaml:3:15: not UTF-8 text (byte 0xe9 cannot be read)"),
    ("utf-16", {CASE: (HEAD + END).encode("utf-16")}, "case.yaml:1:1: not UTF-8 text (byte 0xff cannot be read)"),
    ("nul-byte", {CASE: HEAD + 'description: "a\0b"\n' + END}, "case.yaml:3:16: bad YAML: character U+0000 is not allowed in a YAML file"),
    ("escape-character", {CASE: HEAD + "description: a\x1bb\n" + END}, "case.yaml:3:15: bad YAML: character U+001B is not allowed"),
    ("tab-indentation", {CASE: HEAD + "steps:\n  - id: s\n\tend: true\n"}, "case.yaml:5:1: bad YAML: found character '\\t' that cannot start any token"),
    ("duplicate-key", {CASE: step("end: true\nend: true")}, 'case.yaml:6:5: bad YAML: found duplicate key "end"'),
    ("duplicate-steps", {CASE: HEAD + END + END}, 'case.yaml:6:1: bad YAML: found duplicate key "steps"'),
    ("two-documents", {CASE: HEAD + END + "---\nscenario: other\n"}, "case.yaml:6:1: bad YAML: a second document (`---`): a file holds one scenario"),
    ("unclosed-bracket", {CASE: HEAD + "steps: [{id: s, end: true}\n"}, "case.yaml:4:1: bad YAML: "),
    ("a-list-not-a-mapping", {CASE: "- scenario: case\n"}, "case.yaml:1:1: a scenario file is a mapping with `scenario:`, `trigger:` and `steps:`, not a list"),
    ("empty-file", {CASE: ""}, "case.yaml:1:1: a scenario file is a mapping with `scenario:`, `trigger:` and `steps:`, not an empty file"),
    # ----------------------------------------------------------------- numbers the engine or the database cannot hold
    ("wait-99999999999d", {CASE: step("wait: 99999999999d")}, "case.yaml:5:5: step s: bad duration '99999999999d': at most 3650d (ten years)"),
    ("wait-3651d", {CASE: step("wait: 3651d")}, "case.yaml:5:5: step s: bad duration '3651d': at most 3650d (ten years)"),
    ("wait-zero", {CASE: step("wait: 0d")}, "case.yaml:5:5: step s: bad duration '0d': expected a positive number and a unit"),
    ("wait-negative", {CASE: step("wait: -3d")}, "case.yaml:5:5: step s: bad duration '-3d': expected a positive number and a unit"),
    ("wait-fraction", {CASE: step("wait: 1.5d")}, "case.yaml:5:5: step s: bad duration '1.5d': expected a positive number and a unit"),
    ("timeout-huge", {CASE: step("wait_until: {tag: x}\ntimeout: 99999999999999m")},
     "case.yaml:6:5: step s: bad duration '99999999999999m': at most 3650d (ten years)"),
    ("within-huge", {CASE: step("wait_until: {tag: x}\ntimeout: 3d") + "  - id: t\n    if: {opened: s, within: 520000w}\n    then: s\n"},
     "case.yaml:8:21: step t: bad duration '520000w': at most 3650d (ten years)"),
    ("reentry-after-huge", {CASE: HEAD + "reentry: {after: 99999999d}\n" + END},
     "case.yaml:3:11: bad duration '99999999d': at most 3650d (ten years)"),
    ("score-1e20", {CASE: step("score: +1e20")}, "case.yaml:5:5: step s: 1e+20 points is out of range: a score counts at most 1,000,000 points either way"),
    ("score-20-digits", {CASE: step("score: 99999999999999999999")}, "case.yaml:5:5: step s: 99999999999999999999 points is out of range"),
    ("score-below-int32", {CASE: step("score: -2147483649")}, "case.yaml:5:5: step s: -2147483649 points is out of range"),
    ("score-infinite", {CASE: step("score: .inf")}, "case.yaml:5:5: step s: inf points is out of range"),
    ("score-zero", {CASE: step("score: +0")}, "case.yaml:5:5: step s: score: +0 changes nothing; write +N or -N"),
    ("score-at-least-huge", {CASE: step("if: {score_at_least: 1e20}\nthen: s")}, "case.yaml:5:10: step s: 1e+20 points is out of range"),
    # ----------------------------------------------------------------- unknown keys at every level
    ("unknown-top-level-key", {CASE: HEAD + "exit_whn: []\n" + END}, "case.yaml:3:1: unknown key 'exit_whn' (did you mean 'exit_when'?)"),
    ("unknown-trigger-key", {CASE: "scenario: case\ntrigger: {event: downloaded, wher: {}}\n" + END},
     "case.yaml:2:30: unknown key 'wher' (did you mean 'where'?)"),
    ("unknown-step-key", {CASE: step("end: true\nnxt: bye")}, "case.yaml:6:5: step s: unknown key 'nxt' (did you mean 'next'?)"),
    ("unknown-condition-key", {CASE: step("if: {opened: s, withn: 3d}\nthen: s")}, "case.yaml:5:21: step s: unknown key 'withn' (did you mean 'within'?)"),
    ("unknown-window-key", {CASE: step("wait: 1d\nwindow: {hours: 09:00-18:00, dayz: [mon]}")},
     "case.yaml:6:34: step s: unknown key 'dayz' (did you mean 'days'?)"),
    ("unknown-notify-key", {CASE: step("notify: {email: sales@acme.example, subjet: Hot}")},
     "case.yaml:5:41: step s: unknown key 'subjet' (did you mean 'subject'?)"),
    ("unknown-reentry-key", {CASE: HEAD + "reentry: {aftr: 3d}\n" + END}, "case.yaml:3:11: unknown key 'aftr' (did you mean 'after'?)"),
    # ----------------------------------------------------------------- scoring.yaml
    ("scoring-points-1e20", {SCORING: "behaviour:\n  downloaded: 1e20\n"}, "scoring.yaml:2:3: 1e+20 points is out of range"),
    ("scoring-threshold-huge", {SCORING: "mql: {score_at_least: 5000000000}\n"}, "scoring.yaml:1:7: 5000000000 points is out of range"),
    ("scoring-not-utf8", {SCORING: b"behaviour:\n  downloaded: 10 # t\xe9l\xe9chargement\n"},
     "scoring.yaml:2:21: not UTF-8 text (byte 0xe9 cannot be read)"),
    ("scoring-alias-bomb", {SCORING: bomb()}, "scoring.yaml:5:10: aliases (*name) expand to more than 10,000 values"),
    ("scoring-decay-every-huge", {SCORING: "decay: {every: 99999999999d, percent: 10}\n"},
     "scoring.yaml:1:9: bad duration '99999999999d': at most 3650d (ten years)"),
    # ----------------------------------------------------------------- templates, said under the step that sends them
    ("template-jinja-syntax", sends(MJML.format("{% if %}")), "case.yaml:5:5: step mail: template 't': Jinja syntax error at t.mjml:1:"),
    ("template-undefined-variable", sends(MJML.format("{{ lead.nmae }}")), "case.yaml:5:5: step mail: template 't': 'dict object' has no attribute 'nmae'"),
    ("template-nested-loops", sends(MJML.format("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")),
     f"case.yaml:5:5: step mail: template 't': {TOO_MANY} (at t.mjml line 1)"),
    ("template-x-times-10-10", sends(MJML.format("{{ 'x' * 10**10 }}")),
     f"case.yaml:5:5: step mail: template 't': would make 10,000,000,000 characters (or items), more than the 2,000,000 (2 MB) {TOO_LONG}"),
    ("template-recursive-macro", sends(MJML.format("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")),
     "case.yaml:5:5: step mail: template 't': nested too deeply, or a macro or include calls itself without end (at t.mjml line 1)"),
    ("template-branching-macro", sends(MJML.format("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}")),
     f"case.yaml:5:5: step mail: template 't': {TOO_MANY}"),
    ("template-includes-itself", sends(MJML.format("{% include 't.mjml' %}")),
     "case.yaml:5:5: step mail: template 't': nested too deeply, or a macro or include calls itself without end"),
    ("template-center-a-billion", sends(MJML.format("{{ lead.first_name|center(10**9) }}")),
     "case.yaml:5:5: step mail: template 't': would make 1,000,000,000 characters (or items)"),
    ("template-output-too-big", sends(MJML.format("{% for i in range(30000) %}{{ lead.email * 10 }}{% endfor %}")),
     f"case.yaml:5:5: step mail: template 't': would make 2,000,"),
    ("template-ifs-nested-500-deep", sends(MJML.format("{% if 1 %}" * 500 + "{% endif %}" * 500)),
     "case.yaml:5:5: step mail: template 't': nested too deeply for Jinja to read"),
    ("template-not-utf8", sends(MJML.format("\nS\xe9minaire").encode("latin-1")),
     "case.yaml:5:5: step mail: template 't': t.mjml:2:2: not UTF-8 text (byte 0xe9 cannot be read): save the file as UTF-8"),
    ("template-600-kb", sends(MJML.format("x" * 600_000)),
     "case.yaml:5:5: step mail: template 't': t.mjml: the file is 600.1 KB: a template may be 512 KB at most"),
    ("template-mjml-error", sends("<mjml><mj-body><mj-section><mj-column><mj-text>Bonjour</mj-column></mj-section></mj-body></mjml>"),
     "case.yaml:5:5: step mail: template 't': MJML does not compile"),
    ("template-missing", {CASE: SEND}, "case.yaml:5:5: step mail: template 't' not found in"),
    ("subject-jinja-syntax", {CASE: SEND.replace("subject: Bonjour", "subject: Bonjour {{ lead.first_name"), TEMPLATE: MJML.format("x")},
     "case.yaml:6:5: step mail: `subject:` Jinja syntax error: unexpected end of template"),
    ("subject-nested-2000-brackets", {CASE: SEND.replace("subject: Bonjour", "subject: '{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}'"),
                                      TEMPLATE: MJML.format("x")},
     "case.yaml:6:5: step mail: `subject:` is nested too deeply for Jinja to read"),
]


def _tables(db_url: str) -> list[str]:
    engine = create_engine(db_url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("files, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_validate_answers_a_bad_file_with_one_located_sentence(env: Path, db_url: str, monkeypatch, files, expected) -> None:
    for name, content in files.items():
        path = env / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(env)
    target = "scenarios" if SCORING in files else CASE

    result = CliRunner().invoke(app, ["validate", target])

    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert any(line.startswith("scenarios/") and expected in line for line in lines), result.output
    assert _tables(db_url) == []  # validate stores nothing


def test_the_corpus_holds_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)
