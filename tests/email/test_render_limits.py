"""What rendering one email may take: no template (or lead data) hangs a tick, fills the memory or overflows the
stack; each limit stops the render with a sentence naming the template and what to look at, and at send time only
the message that cannot be built fails, saying why."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from relance.policy import NO_POLICY
from relance.delivery import deliver_pending
from relance.email.templates import SAMPLE_CONTEXT, RenderError, RenderLimits, TemplateLibrary
from relance.settings import Settings
from relance.store.repo import upsert_lead
from tests.basis import professional
from relance.store.tables import Outbox

MJML = "<mjml><mj-body><mj-section><mj-column><mj-text>{}</mj-text></mj-column></mj-section></mj-body></mjml>"
FOOTER = '{{ postal_address }} <a href="{{ unsubscribe_url }}">Se désinscrire</a>'
TOO_LONG = "more than the 2,000,000 (2 MB) one email may hold: a loop repeats too much, or a text is multiplied"
TOO_MANY = "stopped after 100,000 loop turns and calls: a loop or a macro repeats too much for one email"
ENDLESS = "nested too deeply, or a macro or include calls itself without end"

BOMBS = {
    "multiplied": ("{{ 'x' * 10**10 }}", f"would make 10,000,000,000 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "power": ("{{ 2 ** 100000000 }}", "2 ** 100000000 is too large a number to compute in a template (at t.mjml line 1)"),
    "nested-loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                     f"{TOO_MANY} (at t.mjml line 1)"),
    "loops-over-a-variable": ("{% set r = range(100000) %}\n{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
                              f"{TOO_MANY} (at t.mjml line 2)"),
    "recursive-macro": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", f"{ENDLESS} (at t.mjml line 1)"),
    "branching-macro": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
                        f"{TOO_MANY} (at t.mjml line 1)"),
    "self-include": ("{% include 't.mjml' %}", f"{ENDLESS} (at t.mjml line 1)"),
    "doubling": ("{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
                 f"would make 2,097,152 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "growing-list": ("{% set l = [1] %}{% for i in range(60) %}{{ l.extend(l) or '' }}{% endfor %}",
                     f"would make 2,097,152 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "center": ("{{ 'x'|center(10**9) }}", f"would make 1,000,000,000 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "ljust": ("{{ 'x'.ljust(10**9) }}", f"would make 1,000,000,000 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "percent-format": ("{{ '%0999999999d' % 1 }}", f"would make 999,999,999 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "str-format": ("{{ '{:>9999999999}'.format(1) }}",
                   f"would make 9,999,999,999 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "replace": ("{{ ('x' * 100000)|replace('x', 'x' * 100000) }}",
                f"would make 10,000,000,000 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "join": ("{{ range(100000)|join('x' * 100000) }}", f"would make 10,000,000,000 characters (or items), {TOO_LONG} (at t.mjml line 1)"),
    "lipsum": ("{{ lipsum(1000000) }}", "lipsum() makes at most 100 paragraphs of at most 100 words (at t.mjml line 1)"),
    "output": ("{% for i in range(30000) %}{{ 'y' * 100 }}{% endfor %}", f"would make 2,000,047 characters (or items), {TOO_LONG}"),  # with the MJML before
}


def library(tmp_path: Path, source: str | bytes, limits: RenderLimits = RenderLimits()) -> TemplateLibrary:
    path = tmp_path / "t.mjml"
    path.write_bytes(source if isinstance(source, bytes) else source.encode())
    return TemplateLibrary(tmp_path, limits)


@pytest.mark.parametrize("source, message", BOMBS.values(), ids=BOMBS.keys())
def test_a_template_past_a_limit_stops_with_a_sentence_naming_it(tmp_path: Path, source: str, message: str) -> None:
    templates = library(tmp_path, MJML.format(source))
    with pytest.raises(RenderError) as raised:
        templates.render("t", subject="s", context=SAMPLE_CONTEXT)
    assert str(raised.value) == f"template 't': {message}"
    assert templates.check("t") == [f"template 't': {message}"]  # what `relance validate` says under the step


def test_the_subject_has_the_same_limits(tmp_path: Path) -> None:
    templates = library(tmp_path, MJML.format("Bonjour"))
    with pytest.raises(RenderError) as raised:
        templates.render("t", subject="{{ 'x' * 10**10 }}", context=SAMPLE_CONTEXT)
    assert str(raised.value).startswith("template 't': subject: would make 10,000,000,000 characters")


def test_a_render_stops_at_its_deadline(tmp_path: Path) -> None:
    slow = "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}"  # 10 million turns
    templates = library(tmp_path, MJML.format(slow), RenderLimits(seconds=0.01, turns=10**9))
    with pytest.raises(RenderError) as raised:
        templates.render("t", subject="s", context=SAMPLE_CONTEXT)
    # where it stopped is said when the deadline passes inside the template's own code: on a loaded machine 10 ms
    # may be gone before the first loop turn (in the subject, or the first check), and then there is no line to name
    assert re.fullmatch(r"template 't': stopped after 0\.01 s: a loop or a macro repeats too much for one email"
                        r"( \(at t\.mjml line 1\))?", str(raised.value)), str(raised.value)


def test_a_render_held_up_by_a_busy_machine_is_not_cut_off(tmp_path: Path) -> None:
    """The deadline counts the render's own computing, not the time the machine gave to others: on a loaded machine
    a plain email used to miss its 2 s and fail for good. Sleeping stands for the time the render is not scheduled."""
    held_up = {**SAMPLE_CONTEXT, "busy_machine": lambda: time.sleep(0.3) or ""}
    templates = library(tmp_path, MJML.format("Bonjour {{ busy_machine() }}{{ busy_machine() }}"), RenderLimits(seconds=0.2))
    assert "Bonjour" in templates.render("t", subject="s", context=held_up).text


def test_the_html_has_the_output_limit_too(tmp_path: Path) -> None:
    templates = library(tmp_path, MJML.format("Bonjour " * 100), RenderLimits(output=2_000))
    with pytest.raises(RenderError) as raised:
        templates.render("t", subject="s", context=SAMPLE_CONTEXT)
    assert str(raised.value).startswith("template 't': its HTML would make ")
    assert "more than the 2,000 (2 KB) one email may hold" in str(raised.value)


def test_templates_within_the_limits_render_as_before(tmp_path: Path) -> None:
    ok = ("{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}{{ lead.first_name|center(12) }}"
          " {{ '{:,}'.format(5000000) }} {{ 'ab' * 3 }} {{ '%05d' % 42 }} {{ ['a', 'b']|join(', ') }} " + FOOTER)
    email = library(tmp_path, MJML.format(ok)).render("t", subject="Pour {{ lead.first_name ~ '!' }}", context=SAMPLE_CONTEXT)
    assert email.subject == "Pour Léa!"
    assert "Léa 5,000,000 ababab 00042 a, b" in email.text


def test_a_template_too_big_is_not_read(tmp_path: Path) -> None:
    templates = library(tmp_path, MJML.format("x" * 600_000))
    assert templates.check("t") == ["template 't': t.mjml: the file is 600.1 KB: a template may be 512 KB at most"]
    with pytest.raises(RenderError) as raised:
        templates.render("t", subject="s", context=SAMPLE_CONTEXT)
    assert str(raised.value) == "template 't': t.mjml: the file is 600.1 KB: a template may be 512 KB at most"


def test_a_template_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    templates = library(tmp_path, MJML.format("\nS\xe9minaire").encode("latin-1"))
    assert templates.check("t") == ["template 't': t.mjml:2:2: not UTF-8 text (byte 0xe9 cannot be read): save the file as UTF-8"]


def test_a_layout_that_is_not_utf8_is_named_by_the_template_that_extends_it(tmp_path: Path) -> None:
    (tmp_path / "layout.mjml").write_bytes(b"<mjml>\xff</mjml>")
    templates = library(tmp_path, '{% extends "layout.mjml" %}')
    assert templates.check("t") == [
        "template 't': layout.mjml:1:7: not UTF-8 text (byte 0xff cannot be read): save the file as UTF-8"]


def test_jinja_nested_too_deeply_to_read_is_a_sentence(tmp_path: Path) -> None:
    templates = library(tmp_path, MJML.format("{% if 1 %}" * 500 + "{% endif %}" * 500))
    assert templates.check("t") == ["template 't': nested too deeply for Jinja to read ({% if %} in {% if %}..., or brackets)"]


# --------------------------------------------------------------------------- at send time


def test_at_send_time_only_the_message_past_a_limit_fails_saying_why(engine, db_url: str, tmp_path: Path, clock) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "templates").mkdir()
    per_lead = "{% for i in range(lead.fields.n) %}{% for j in range(lead.fields.n) %}.{% endfor %}{% endfor %} " + FOOTER
    (tmp_path / "templates" / "promo.mjml").write_text(MJML.format(per_lead), encoding="utf-8")
    settings = Settings(database_url=db_url, scenarios_dir=tmp_path / "scenarios", templates_dir=tmp_path / "templates",
                        outbox_dir=tmp_path / "outbox", transport="file")
    now = clock.now()
    with Session(engine) as session:
        ids = {}
        for email, n in (("small@acme.example", 3), ("huge@acme.example", 100_000)):
            lead = upsert_lead(session, email=email, now=now, first_name="Léa", fields=professional(n=n))
            session.flush()
            row = Outbox(lead_id=lead.id, step_id="promo", scenario="nurture", template="promo", subject="Pour vous",
                         to_address=email, kind="lead", created_at=now)
            session.add(row)
            session.flush()
            ids[email] = row.id
        session.commit()

    deliver_pending(engine, settings, now=clock.advance(timedelta(minutes=1)), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)

    with Session(engine) as session:
        rows = {r.to_address: r for r in session.execute(select(Outbox)).scalars()}
    assert rows["small@acme.example"].status == "sent"
    assert (settings.outbox_dir / f"{ids['small@acme.example']}.eml").is_file()
    huge = rows["huge@acme.example"]
    assert huge.status == "failed"
    assert huge.error == f"cannot be built: RenderError: template 'promo': {TOO_MANY} (at promo.mjml line 1)"
    assert not (settings.outbox_dir / f"{ids['huge@acme.example']}.eml").exists()
