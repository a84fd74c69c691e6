"""Rendering the shipped templates, MIME, and every transport (SES against a real moto server)."""

from __future__ import annotations

import json
import socket
import urllib.request
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import boto3
import pytest

from relance.email.message import OutgoingEmail, build_mime
from relance.email.templates import SAMPLE_CONTEXT, RenderError, TemplateLibrary
from relance.email.transports import DeliveryError, FileTransport, SesTransport

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "emails"
SHIPPED = TemplateLibrary(TEMPLATES)


def context(**lead) -> dict:
    return {**SAMPLE_CONTEXT, "lead": {**SAMPLE_CONTEXT["lead"], **lead}}


@pytest.mark.parametrize("name", SHIPPED.names())
def test_every_shipped_template_renders_html_and_text_with_nothing_left_unrendered(name):
    email = SHIPPED.render(name, subject="{{ lead.first_name }}, bonjour", context=context(first_name="Inès"), preheader="Aperçu")
    assert email.subject == "Inès, bonjour"
    assert "<html" in email.html and "https://relance.example/u/sample" in email.html
    assert "10 rue de la Paix" in email.text
    for part in (email.html, email.text, email.subject):
        assert "{{" not in part and "{%" not in part
    assert SHIPPED.check(name) == []


def test_lead_data_is_escaped_in_html_and_kept_on_one_line_in_the_subject():
    email = SHIPPED.render("whitepaper-followup", subject="{{ lead.first_name }}", context=context(first_name="<script>x</script>\r\nBcc: a@b.c"))
    assert "<script>x" not in email.html and "&lt;script&gt;" in email.html
    assert "\n" not in email.subject and "\r" not in email.subject


def test_the_sandbox_refuses_reaching_python_internals(tmp_path):
    (tmp_path / "evil.mjml").write_text("<mjml><mj-body><mj-text>{{ lead.__class__.__mro__ }}</mj-text></mj-body></mjml>")
    with pytest.raises(RenderError):
        TemplateLibrary(tmp_path).render("evil", subject="s", context=context())


def test_check_names_missing_templates_jinja_errors_and_bad_mjml(tmp_path):
    (tmp_path / "jinja.mjml").write_text("<mjml><mj-body>\n<mj-text>{% if %}</mj-text></mj-body></mjml>")
    (tmp_path / "broken.mjml").write_text("<mjml><mj-body><mj-text>unclosed</mj-body>")
    library = TemplateLibrary(tmp_path)
    assert library.check("absent") == [f"template 'absent' not found in {tmp_path} (absent.mjml)"]
    assert "Jinja syntax error at jinja.mjml:2" in library.check("jinja")[0]
    assert "MJML does not compile" in library.check("broken")[0]


def test_check_renders_the_branches_internal_emails_take_too(tmp_path):
    (tmp_path / "note.mjml").write_text(  # breaks only when a hand-off fills it in
        "<mjml><mj-head><mj-title>Lead{% if handoff is defined %}<mj-text>{{ handoff.owner }}</mj-text>{% endif %}"
        "</mj-title></mj-head><mj-body><mj-section><mj-column><mj-text>x</mj-text></mj-column></mj-section></mj-body></mjml>")
    assert "MJML does not compile" in TemplateLibrary(tmp_path).check("note")[0]


def test_a_missing_variable_names_the_template():
    with pytest.raises(RenderError, match="whitepaper-followup"):
        SHIPPED.render("whitepaper-followup", subject="s", context={"lead": {}})


def outgoing(**kw) -> OutgoingEmail:
    base = dict(to="lea@acme.example", from_="Relance <marketing@relance.example>", reply_to="ventes@relance.example",
                subject="Votre livre blanc", html="<p>Bonjour</p>", text="Bonjour\n", outbox_id=42)
    return OutgoingEmail(**{**base, **kw})


def test_mime_is_multipart_alternative_and_parses_back():
    message = message_from_bytes(build_mime(outgoing(headers={"List-Unsubscribe": "<https://x.example/u>"})).as_bytes(), policy=default)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Reply-To"] == "ventes@relance.example" and message["List-Unsubscribe"] == "<https://x.example/u>"
    assert message["Message-ID"] and message["Date"]


@pytest.mark.parametrize("field", ["subject", "to", "from_"])
def test_line_breaks_in_headers_are_refused(field):
    with pytest.raises(ValueError, match="line break"):
        build_mime(outgoing(**{field: "x\r\nBcc: victim@example.com"}))


def test_the_file_transport_writes_one_parseable_eml_per_outbox_row(tmp_path):
    message_id = FileTransport(tmp_path).send(outgoing())
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == ["42.eml"]
    assert message_from_bytes(files[0].read_bytes())["Message-ID"] == message_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_ses(monkeypatch):
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("sesv2", region_name="eu-west-1", endpoint_url=url)
    yield client, url
    server.stop()


def test_ses_sends_simple_content_with_configuration_set_and_tags_to_a_moto_server(moto_ses):
    client, url = moto_ses
    client.create_email_identity(EmailIdentity="marketing@relance.example")
    client.create_configuration_set(ConfigurationSetName="relance-events")
    transport = SesTransport(client, "relance-events")
    message_id = transport.send(outgoing(headers={"List-Unsubscribe": "<https://x.example/u>"},
                                         tags={"scenario": "whitepaper-nurture", "step": "send-guide"}))
    assert message_id
    with urllib.request.urlopen(f"{url}/moto-api/data.json") as response:
        data = json.load(response)
    # moto keeps id, source, destinations, subject and body (not headers or tags) of each message
    [recorded] = [m for m in data["ses"]["Message"] if m["id"] == message_id]
    assert recorded["source"] == "Relance <marketing@relance.example>"
    assert recorded["destinations"]["ToAddresses"] == ["lea@acme.example"]
    assert recorded["subject"] == "Votre livre blanc"


def test_ses_refusals_are_not_retried_but_throttling_is(moto_ses):
    client, _ = moto_ses
    transport = SesTransport(client, None)
    with pytest.raises(DeliveryError) as refused:
        transport.send(outgoing(from_="unverified@nowhere.example"))
    assert refused.value.retryable is False

    class Throttled:
        def send_email(self, **_):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 429}}, "SendEmail")

    with pytest.raises(DeliveryError) as throttled:
        SesTransport(Throttled()).send(outgoing())
    assert throttled.value.retryable is True


def test_the_text_part_keeps_the_words_and_writes_out_every_link_but_not_the_head():
    from mjml import mjml2html

    from relance.email.templates import text_of

    mjml = """<mjml><mj-head><mj-title>Titre</mj-title><mj-preview>Aperçu caché</mj-preview></mj-head>
    <mj-body><mj-section><mj-column>
      <mj-text font-size="15px">Bonjour <strong>Léa</strong>,<br />voici le guide.</mj-text>
      <mj-button href="https://relance.example/guide" background-color="#000">Lire le guide</mj-button>
      <mj-text>Lire <a href="https://relance.example/blog">le blog</a> ou <a href="#top">remonter</a>.</mj-text>
    </mj-column></mj-section></mj-body></mjml>"""

    text = text_of(mjml2html(mjml))

    assert text == ("Bonjour Léa,\nvoici le guide.\n\nLire le guide (https://relance.example/guide)\n\n"
                    "Lire le blog (https://relance.example/blog) ou remonter.\n")
