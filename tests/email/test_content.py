"""What an email says: the text part says what the HTML says, the preheader is rendered and shown,
and every email to a lead carries its unsubscribe link and postal address, whatever the template.

Assertions read the rendered HTML with lxml (a real HTML parser), never relance's own text helper."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest

from relance.policy import NO_POLICY
from relance.email.templates import SAMPLE_CONTEXT, RenderError, TemplateLibrary
from tests.basis import professional

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "emails"
SHIPPED = TemplateLibrary(TEMPLATES)
UNSUBSCRIBE = "https://t.relance.example/u/abc.def"
POSTAL = "Relance SAS, 10 rue de la Paix, 75002 Paris"

# What official MJML templates do and relance's own do not: an Outlook-only / non-Outlook mj-raw, linked
# images with alt text, social share buttons, a navbar, a hero, no <mj-preview>, no footer of ours.
OFFICIAL_LIKE = """<mjml>
  <mj-head><mj-title>Promo</mj-title><mj-font name="Lato" href="https://fonts.example/lato.css" /></mj-head>
  <mj-body>
    <mj-raw><!--[if !mso]><!--><div class="web-only">Version web</div><!--<![endif]--></mj-raw>
    <mj-raw><!--[if mso]><table><tr><td>Outlook only</td></tr></table><![endif]--></mj-raw>
    <mj-section><mj-column>
      <mj-image src="https://cdn.example/logo.png" alt="ACME Logo" href="https://acme.example/" />
      <mj-image src="https://cdn.example/divider.png" alt="" />
      <mj-image src="https://cdn.example/v1.png" href="https://acme.example/video" />
      <mj-image src="https://cdn.example/v2.png" href="https://acme.example/video" />
      <mj-navbar><mj-navbar-link href="https://acme.example/shop">Boutique</mj-navbar-link></mj-navbar>
      <mj-text>Bonjour {{ lead.first_name }}, lisez <a href="https://acme.example/blog?a=1&amp;b=2">le blog</a>.</mj-text>
      <mj-button href="https://acme.example/offre">J'en profite</mj-button>
      <mj-social mode="horizontal">
        <mj-social-element name="facebook" href="https://acme.example/offre">Partager</mj-social-element>
        <mj-social-element name="twitter" href="https://acme.example/offre"></mj-social-element>
      </mj-social>
    </mj-column></mj-section>
    <mj-wrapper>
      <mj-section><mj-column><mj-text>Fin de l'offre</mj-text></mj-column></mj-section>
      <mj-raw>&lt;!--[if !mso]&gt;&lt;\\!--&gt;</mj-raw>
      <mj-section><mj-column><mj-text>Vraiment la fin</mj-text></mj-column></mj-section>
    </mj-wrapper>
  </mj-body>
</mjml>
"""


def context(**extra) -> dict:
    return {**SAMPLE_CONTEXT, "unsubscribe_url": UNSUBSCRIBE, "postal_address": POSTAL, **extra}


def library(tmp_path: Path, **templates: str) -> TemplateLibrary:
    for name, source in templates.items():
        (tmp_path / f"{name.replace('_', '-')}.mjml").write_text(source, encoding="utf-8")
    return TemplateLibrary(tmp_path)


def body_of(html: str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(html.encode()).body


def visible_hrefs(html: str) -> set[str]:
    """The http(s) links a reader of the HTML can follow (Outlook-only comments are no part of it)."""
    return {a.get("href") for a in body_of(html).iter("a") if (a.get("href") or "").startswith("http")}


def text_urls(text: str) -> set[str]:
    return set(re.findall(r"https?://[^\s()]+", text))


def hidden_preview(html: str) -> str | None:
    """The text of the body's first hidden block, which inboxes show as the preview."""
    for element in body_of(html).iter():
        if "display:none" in (element.get("style") or "").replace(" ", ""):
            return element.text_content()
    return None


# --------------------------------------------------------------------------- text part


def test_the_text_part_has_no_conditional_comment_and_shows_what_non_outlook_clients_show(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context())
    assert "<!--" not in email.text and "[if" not in email.text and "endif" not in email.text and "-->" not in email.text
    assert "Version web" in email.text  # shown by every client but Outlook, as in the HTML
    assert "Outlook only" not in email.text
    assert email.text.rstrip().endswith("Fin de l'offre\n\nVraiment la fin")


def test_image_alt_text_is_kept_and_no_link_stands_alone_as_a_bare_url_in_brackets(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context())
    assert "[ACME Logo] (https://acme.example/)" in email.text
    for line in email.text.splitlines():
        assert not re.fullmatch(r"\s*\(https?://\S+\)\s*", line), f"bare link line: {line!r}"


def test_the_text_part_links_are_the_links_of_the_html(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context())
    assert text_urls(email.text) == visible_hrefs(email.html)
    assert "https://www.facebook.com/sharer/sharer.php?u=https://acme.example/offre" in email.text
    assert "le blog (https://acme.example/blog?a=1&b=2)" in email.text
    assert "J'en profite (https://acme.example/offre)" in email.text
    assert email.text.count("https://acme.example/video") == 1  # two images side by side, one link


@pytest.mark.parametrize("name", SHIPPED.names())
def test_every_shipped_template_text_part_links_match_its_html_and_carry_the_footer(name):
    email = SHIPPED.render(name, subject="s", context=context(), preheader="Aperçu {{ lead.first_name }}")
    assert text_urls(email.text) == visible_hrefs(email.html)
    assert "<!--" not in email.text and "{{" not in email.text
    assert "Aperçu" not in email.text  # the hidden preview text is the inbox's, not the reader's
    assert hidden_preview(email.html) == "Aperçu Léa"


def test_the_text_part_says_the_visible_words_of_the_html_in_order(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context())
    words = [w for w in email.text.split() if not w.startswith(("(http", "[", "http"))]
    assert " ".join(words).startswith("Version web")
    assert words.index("Boutique") < words.index("Bonjour") < words.index("J'en") < words.index("Partager")


# --------------------------------------------------------------------------- preheader


def test_the_preheader_is_rendered_with_the_lead_and_escaped_in_the_html():
    email = SHIPPED.render("whitepaper-followup", subject="s", context=context(lead={**SAMPLE_CONTEXT["lead"], "first_name": "<b>Inès</b>"}),
                           preheader="Pour {{ lead.first_name }}{% if lead.company %} chez {{ lead.company }}{% endif %}")
    assert hidden_preview(email.html) == "Pour <b>Inès</b> chez ACME"
    assert "{{" not in email.html and "<b>Inès</b>" not in email.html


def test_a_template_without_mj_preview_still_shows_the_preheader_in_the_inbox(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context(), preheader="Pour {{ lead.first_name }}")
    assert hidden_preview(email.html) == "Pour Léa"
    assert email.html.count("Pour Léa") == 1


def test_a_template_with_its_own_fixed_preview_shows_the_steps_preheader_instead(tmp_path):
    fixed = OFFICIAL_LIKE.replace("<mj-title>Promo</mj-title>", "<mj-title>Promo</mj-title><mj-preview>Texte figé</mj-preview>")
    templates = library(tmp_path, promo=fixed)
    assert hidden_preview(templates.render("promo", subject="s", context=context(), preheader="Pour {{ lead.first_name }}").html) == "Pour Léa"
    assert hidden_preview(templates.render("promo", subject="s", context=context()).html) == "Texte figé"  # no preheader: the template's own


def test_a_template_that_places_the_preheader_itself_is_left_alone(tmp_path):
    own = OFFICIAL_LIKE.replace("<mj-body>", '<mj-body><mj-raw><div style="display:none">{{ preheader }}</div></mj-raw>')
    email = library(tmp_path, promo=own).render("promo", subject="s", context=context(), preheader="Pour {{ lead.first_name }}")
    assert hidden_preview(email.html) == "Pour Léa" and email.html.count("Pour Léa") == 1


def test_a_template_that_only_tests_the_preheader_still_shows_it(tmp_path):
    tests = OFFICIAL_LIKE.replace("<mj-title>Promo</mj-title>",
                                  "<mj-title>Promo</mj-title>{% if preheader %}<mj-preview>Fixe</mj-preview>{% endif %}")
    email = library(tmp_path, promo=tests).render("promo", subject="s", context=context(), preheader="Pour {{ lead.first_name }}")
    assert hidden_preview(email.html) == "Pour Léa"


def test_a_preheader_naming_an_unknown_variable_names_the_template_and_the_preheader():
    with pytest.raises(RenderError, match=r"template 'whitepaper-followup': preheader: .*frist_name"):
        SHIPPED.render("whitepaper-followup", subject="s", context=context(), preheader="{{ lead.frist_name }}")


# --------------------------------------------------------------------------- footer


def footer_of(email) -> tuple[bool, bool, bool, bool]:
    """(unsubscribe link in the HTML, postal address in the HTML, both in the text part)."""
    body = body_of(email.html)
    return (UNSUBSCRIBE in {a.get("href") for a in body.iter("a")}, POSTAL in " ".join(body.text_content().split()),
            UNSUBSCRIBE in email.text, POSTAL in " ".join(email.text.split()))


def test_an_email_to_a_lead_from_a_template_without_footer_gets_one(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context(sender="ACME Marketing"), to_lead=True)
    assert footer_of(email) == (True, True, True, True)
    assert "ACME Marketing" in email.text and "ACME Marketing" in email.html  # who writes, with its address
    assert hidden_preview(email.html) is None  # nothing injected where there is no preheader


def test_a_template_with_its_own_footer_gets_no_second_one(tmp_path):
    email = SHIPPED.render("whitepaper-followup", subject="s", context=context(), to_lead=True)
    assert email.html.count(UNSUBSCRIBE) == 1 and email.html.count(POSTAL) == 1


def test_a_template_missing_only_the_address_gets_the_footer(tmp_path):
    half = OFFICIAL_LIKE.replace("<mj-button", '<mj-text><a href="{{ unsubscribe_url }}">Stop</a></mj-text><mj-button')
    email = library(tmp_path, promo=half).render("promo", subject="s", context=context(), to_lead=True)
    assert footer_of(email) == (True, True, True, True)


def test_internal_emails_get_no_lead_footer(tmp_path):
    email = library(tmp_path, promo=OFFICIAL_LIKE).render("promo", subject="s", context=context(unsubscribe_url=None))
    assert footer_of(email)[:2] == (False, False)


def test_check_refuses_a_lead_template_without_unsubscribe_link_or_postal_address(tmp_path):
    half = OFFICIAL_LIKE.replace("<mj-button", '<mj-text><a href="{{ unsubscribe_url }}">Stop</a></mj-text><mj-button')
    templates = library(tmp_path, promo=OFFICIAL_LIKE, half=half)
    [problem] = templates.check("promo", to_lead=True)
    assert "template 'promo'" in problem and "{{ unsubscribe_url }}" in problem and "{{ postal_address }}" in problem
    [problem] = templates.check("half", to_lead=True)
    assert "{{ postal_address }}" in problem and "unsubscribe_url" not in problem
    assert templates.check("promo", to_lead=False) == []  # internal: staff mail needs neither


def test_a_link_shown_only_when_there_is_an_unsubscribe_url_counts(tmp_path):
    guarded = OFFICIAL_LIKE.replace(
        "<mj-button",
        '<mj-text>{{ postal_address }}{% if unsubscribe_url %} <a href="{{ unsubscribe_url }}">Stop</a>{% endif %}</mj-text><mj-button')
    assert library(tmp_path, promo=guarded).check("promo", to_lead=True) == []


def test_an_empty_unsubscribe_link_does_not_count_and_gets_the_footer(tmp_path):
    empty = OFFICIAL_LIKE.replace("<mj-button", '<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}"></a></mj-text><mj-button')
    templates = library(tmp_path, promo=empty)
    [problem] = templates.check("promo", to_lead=True)
    assert "unsubscribe link" in problem and "postal address" not in problem

    email = templates.render("promo", subject="x", context=SAMPLE_CONTEXT, to_lead=True)

    assert "Se désinscrire" in email.html and f"Se désinscrire ({SAMPLE_CONTEXT['unsubscribe_url']})" in email.text


def test_a_variable_only_tested_never_shown_does_not_count(tmp_path):
    tested = OFFICIAL_LIKE.replace("<mj-button", "{% if unsubscribe_url and postal_address %}<mj-text>Merci</mj-text>{% endif %}<mj-button")
    [problem] = library(tmp_path, promo=tested).check("promo", to_lead=True)
    assert "{{ unsubscribe_url }}" in problem and "{{ postal_address }}" in problem


def test_a_footer_commented_out_or_hidden_does_not_count(tmp_path):
    footer = '<mj-text>{{ postal_address }} <a href="{{ unsubscribe_url }}">Stop</a></mj-text>'
    commented = OFFICIAL_LIKE.replace("<mj-button", f"<mj-raw><!-- {footer} --></mj-raw><mj-button")
    hidden = OFFICIAL_LIKE.replace("<mj-button", footer.replace("<mj-text>", '<mj-text css-class="x" container-background-color="#fff">')
                                   .replace("{{ postal_address }}", '<div style="display: none">{{ postal_address }}</div>')
                                   .replace('<a href', '<a style="display:none" href') + "<mj-button")
    templates = library(tmp_path, commented=commented, hidden=hidden)
    for name in ("commented", "hidden"):
        [problem] = templates.check(name, to_lead=True)
        assert "{{ unsubscribe_url }}" in problem and "{{ postal_address }}" in problem, name
        email = templates.render(name, subject="s", context=context(), to_lead=True)
        assert footer_of(email) == (True, True, True, True), name


@pytest.mark.parametrize("name", SHIPPED.names())
def test_every_shipped_template_passes_the_lead_check(name):
    assert SHIPPED.check(name, to_lead=True) == []


def test_validate_names_the_file_step_and_template_of_a_lead_email_without_footer(tmp_path):
    from relance.workspace import validate_paths

    (tmp_path / "templates").mkdir()
    library(tmp_path / "templates", promo=OFFICIAL_LIKE)
    scenario = tmp_path / "promo.yaml"
    scenario.write_text(
        "scenario: promo\ntrigger: {event: downloaded}\nsteps:\n"
        "  - id: tell-sales\n    notify: {email: ventes@example.com, template: promo}\n"
        "  - id: offer\n    send: promo\n    subject: Offre\n", encoding="utf-8")
    problems, _ = validate_paths([scenario], templates_dir=tmp_path / "templates")
    assert [str(p) for p in problems] == [
        f"{scenario}:7:5: step offer: template 'promo' is sent to leads but shows no unsubscribe link "
        "({{ unsubscribe_url }} as a link) and no postal address ({{ postal_address }}): "
        "add them, or extend layout.mjml"
    ]


def test_a_lead_email_whose_template_lost_its_footer_leaves_with_one_and_staff_mail_without(tmp_path, engine, clock):
    """A template changed after `relance validate`: the .eml written still carries the link and address."""
    from email import message_from_bytes
    from email.policy import default

    from sqlmodel import Session

    from relance.delivery import deliver
    from relance.email.transports import FileTransport
    from relance.settings import Settings
    from relance.store.repo import upsert_lead
    from relance.store.tables import Outbox

    (tmp_path / "templates").mkdir()
    library(tmp_path / "templates", promo=OFFICIAL_LIKE)
    settings = Settings(database_url="sqlite://", templates_dir=tmp_path / "templates", postal_address=POSTAL,
                        public_url="https://t.relance.example", secret_key="s3cret")
    with Session(engine) as session:
        lead = upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa", fields=professional())
        common = dict(lead_id=lead.id, template="promo", scenario="promo", created_at=clock.now())
        rows = [Outbox(**common, subject="Offre", to_address=lead.email, step_id="offer",
                       kind="lead", options={"preheader": "Pour {{ lead.first_name }}"}),
                Outbox(**common, subject="Lead", to_address="ventes@relance.example", step_id="tell", kind="internal")]
        session.add_all(rows)
        session.commit()
        ids = [row.id for row in rows]
    result = deliver(engine, settings, outbox_ids=ids, now=clock.now(), transport=FileTransport(tmp_path / "out"), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)
    assert result.sent == 2, result.errors

    def parts(outbox_id: int):
        message = message_from_bytes((tmp_path / "out" / f"{outbox_id}.eml").read_bytes(), policy=default)
        return message, message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()

    message, html, text = parts(ids[0])
    unsubscribe = message["List-Unsubscribe"].strip("<>")
    assert unsubscribe in {a.get("href") for a in body_of(html).iter("a")}
    assert POSTAL in " ".join(body_of(html).text_content().split())
    assert f"Se désinscrire ({unsubscribe})" in text and POSTAL in " ".join(text.split())
    assert hidden_preview(html) == "Pour Léa"

    staff, html, text = parts(ids[1])
    assert staff["List-Unsubscribe"] is None and "/u/" not in html and POSTAL not in html and POSTAL not in text
