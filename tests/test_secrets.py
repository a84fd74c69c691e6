"""Secrets: nobody forges a link. A guessable signing key is refused where links are signed or verified for real,
keys rotate without breaking sent links, and bearer tokens are the token exactly, compared in constant time."""

from __future__ import annotations

import hmac
import os
import re
import subprocess
import sys
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select
from typer.testing import CliRunner

from relance.api.app import create_app
from relance.cli import app as cli
from relance.email import tracking
from relance.email.templates import TemplateLibrary
from relance.email.transports import FileTransport
from relance.ingest import IncomingEvent, ingest_events
from relance.plans import sync_scenarios
from relance.tick import run_tick_inline
from relance.workspace import load_workspace
from relance.settings import (DEFAULT_SECRET_KEY, SettingError, Settings, get_settings, require_api_token,
                              require_signing_keys)
from relance.store.repo import upsert_lead
from relance.store.tables import Event, Lead, Outbox
from tests.units import committed
from tests.basis import professional

ROOT = Path(__file__).resolve().parents[1]
OLD_KEY = "old-key-of-the-sender-0123456789-abcdefgh"
NEW_KEY = "new-key-of-the-sender-9876543210-zyxwvuts"
TOKEN = "bearer-token-of-the-tests-0123"
PUBLIC = "https://t.relance.example"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.mark.parametrize("key, why", [
    (DEFAULT_SECRET_KEY, "it is the default 'change-me'"),
    ("short-key-1234", "a key of 14 characters is guessable; it must have at least 32"),
    ("ab" * 20, "a key of 2 different characters is guessable"),
])
def test_a_guessable_signing_key_is_refused_in_one_sentence_that_says_how_to_make_one(key, why):
    with pytest.raises(SettingError) as caught:
        require_signing_keys(Settings(secret_key=key))
    said = str(caught.value)
    assert said.startswith("setting RELANCE_SECRET_KEY cannot sign links: " + why)
    assert "anyone can forge click and unsubscribe links" in said and "secrets.token_urlsafe(32)" in said
    assert "\n" not in said


def test_an_old_key_must_be_as_strong_as_the_current_one_and_a_strong_pair_passes():
    with pytest.raises(SettingError, match=r"setting RELANCE_SECRET_KEYS_OLD cannot sign links: it is the default .*remove it"):
        require_signing_keys(Settings(secret_key=NEW_KEY, secret_keys_old=f"{OLD_KEY}, change-me"))
    settings = Settings(secret_key=NEW_KEY, secret_keys_old=f" {OLD_KEY} ,")
    require_signing_keys(settings)
    assert settings.verifying_keys == (NEW_KEY, OLD_KEY)


@pytest.mark.parametrize("token", ["short-token", "a-token-with-a-trailing-space ", " a-token-with-a-leading-space",
                                   "a token with spaces inside", "un-jeton-accentué-très-long"])
def test_a_short_or_padded_api_token_is_refused(token):
    with pytest.raises(SettingError, match=r"^setting RELANCE_API_TOKEN cannot be used: a bearer token must be at least 16"):
        require_api_token(Settings(api_token=token))
    require_api_token(Settings(api_token=TOKEN))
    require_api_token(Settings(api_token=None))  # no token: the API takes no events, nothing to guess


@pytest.mark.parametrize("argv", [["serve"], ["tick"], ["flow", "sla"], ["flow", "reengage"]])
@pytest.mark.parametrize("key", [None, DEFAULT_SECRET_KEY, "too-short"])
def test_commands_that_sign_or_verify_links_refuse_to_start_with_a_guessable_key(env, monkeypatch, argv, key):
    if key is None:
        monkeypatch.delenv("RELANCE_SECRET_KEY")  # unset: the default
    else:
        monkeypatch.setenv("RELANCE_SECRET_KEY", key)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: setting RELANCE_SECRET_KEY cannot sign links")
    assert "Traceback" not in result.output


def test_serve_refuses_a_short_api_token(env, monkeypatch):
    monkeypatch.setenv("RELANCE_API_TOKEN", "s3cret")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2 and "error: setting RELANCE_API_TOKEN cannot be used" in result.stderr


def test_a_real_serve_process_with_the_default_key_exits_at_once_saying_why(tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RELANCE_")}
    environment.update(RELANCE_DATABASE_URL=f"sqlite:///{tmp_path / 'relance.db'}", RELANCE_SCENARIOS_DIR=str(ROOT / "scenarios"),
                       RELANCE_TEMPLATES_DIR=str(ROOT / "templates" / "emails"),
                       PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "relance.cli", "serve", "--port", "0"], env=environment, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "setting RELANCE_SECRET_KEY cannot sign links: it is the default 'change-me'" in done.stderr
    assert "Traceback" not in done.stderr and "Uvicorn running" not in done.stderr


def _world(engine, clock, tmp_path, db_url, *, key: str):
    """One lead mailed by the shipped white-paper scenario, its links signed with `key`: the lead, the email."""
    settings = Settings(database_url=db_url, scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails",
                        outbox_dir=tmp_path / "outbox", secret_key=key, public_url=PUBLIC, api_token=TOKEN)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=clock.now(), workspace=workspace)
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa", fields=professional())
        session.commit()
    committed(engine, ingest_events, workspace=workspace, events=[IncomingEvent("downloaded", "lea@acme.example", clock.now(), {"asset": "livre-blanc-leads"})], now=clock.now())
    run_tick_inline(engine, settings, scenario="whitepaper-nurture", now=clock.now(), workspace=workspace,
                    transport=FileTransport(settings.outbox_dir), templates=TemplateLibrary(settings.templates_dir))
    [eml] = list(settings.outbox_dir.glob("*.eml"))
    return workspace, message_from_bytes(eml.read_bytes(), policy=default)


def _api(engine, workspace, clock, **keys) -> TestClient:
    settings = Settings(public_url=PUBLIC, api_token=TOKEN, **keys)
    return TestClient(create_app(settings, engine=engine, workspace=workspace, clock=clock))


def _click_path(message) -> str:
    html = next(p.get_content() for p in message.iter_parts() if p.get_content_type() == "text/html")
    return re.search(rf'href="{re.escape(PUBLIC)}(/c/[^"]+)"', html).group(1)


def _stored(engine, model, **where):
    with Session(engine) as session:
        return session.exec(select(model).filter_by(**where)).all()


def test_links_forged_with_the_default_key_open_no_redirect_and_unsubscribe_nobody(engine, clock, tmp_path, db_url):
    workspace, _ = _world(engine, clock, tmp_path, db_url, key=NEW_KEY)
    [lead] = _stored(engine, Lead, email="lea@acme.example")
    [outbox] = _stored(engine, Outbox)
    identity = dict(outbox_id=outbox.id, lead_id=lead.id, email=lead.email)
    click = tracking.sign(DEFAULT_SECRET_KEY, kind=tracking.CLICK, link="https://evil.example/phish", **identity)
    leave = tracking.sign(DEFAULT_SECRET_KEY, kind=tracking.UNSUBSCRIBE, **identity)
    api = _api(engine, workspace, clock, secret_key=NEW_KEY)

    assert api.get(f"/c/{click}", follow_redirects=False).status_code == 404
    assert api.post(f"/u/{leave}", content="List-Unsubscribe=One-Click",
                    headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 404
    assert _stored(engine, Event, type="email_clicked") == [] and _stored(engine, Event, type="unsubscribed") == []
    assert _stored(engine, Lead, email="lea@acme.example")[0].suppressed is None


def test_after_a_key_rotation_links_already_sent_still_work_and_stop_once_the_old_key_is_dropped(engine, clock, tmp_path, db_url):
    workspace, message = _world(engine, clock, tmp_path, db_url, key=OLD_KEY)
    path = _click_path(message)

    dropped = _api(engine, workspace, clock, secret_key=NEW_KEY)
    assert dropped.get(path, follow_redirects=False).status_code == 404
    assert _stored(engine, Event, type="email_clicked") == []

    rotated = _api(engine, workspace, clock, secret_key=NEW_KEY, secret_keys_old=OLD_KEY)
    clock.advance(timedelta(minutes=5))  # a person's click, not a mail scanner's seconds after sending
    response = rotated.get(path, follow_redirects=False, headers={"User-Agent": BROWSER})
    assert response.status_code == 302 and response.headers["location"].startswith("https://relance.example/")
    assert len(_stored(engine, Event, type="email_clicked")) == 1
    unsubscribe = message["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC)
    assert rotated.post(unsubscribe, content="List-Unsubscribe=One-Click",
                        headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 200
    assert _stored(engine, Lead, email="lea@acme.example")[0].suppressed == "unsubscribed"


keys = st.text(st.characters(codec="ascii", min_codepoint=33, max_codepoint=126), min_size=32, max_size=48)


@given(signer=keys, others=st.lists(keys, max_size=3), position=st.integers(0, 3), link=st.from_regex(r"https://[a-z]{1,10}\.example/[a-z0-9/]{0,20}", fullmatch=True))
def test_a_token_verifies_under_any_list_holding_its_key_and_under_no_list_without_it(signer, others, position, link):
    token = tracking.sign(signer, kind=tracking.CLICK, outbox_id=7, lead_id=3, email="a@b.example", link=link)
    others = [key for key in others if key != signer]
    with_it = others[:position] + [signer] + others[position:]
    assert tracking.verify(with_it, token, kind=tracking.CLICK)["u"] == link
    assert tracking.verify(others, token, kind=tracking.CLICK) is None
    assert tracking.verify(with_it, token, kind=tracking.UNSUBSCRIBE) is None  # a click token unsubscribes nobody


@pytest.mark.parametrize("header, accepted", [
    (f"Bearer {TOKEN}", True),
    (f"bearer {TOKEN}", True),  # the scheme is case-insensitive (RFC 9110 11.1)
    (f"Bearer  {TOKEN}", True),  # 1*SP between scheme and token (RFC 9110 11.4)
    (f"Bearer {TOKEN} ", False),
    (f"Bearer {TOKEN}\t", False),
    (f"Bearer {TOKEN} x", False),
    (f"Bearer {TOKEN}x", False),
    (f"Bearer {TOKEN[:-1]}", False),
    (f"Bearer x{TOKEN}", False),
    (TOKEN, False),
    (f"Basic {TOKEN}", False),
    (f"Bearer{TOKEN}", False),
    ("Bearer ", False),
    ("", False),
])
def test_a_bearer_token_is_the_token_exactly(engine, clock, header, accepted):
    api = _api(engine, load_workspace(Settings(scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails")),
               clock, secret_key=NEW_KEY)
    event = {"type": "form_submitted", "email": "tom@acme.example", "properties": {"form": "contact"}}
    response = api.post("/events", json=event, headers={"Authorization": header})
    if accepted:
        assert response.status_code == 200, response.text
        assert len(_stored(engine, Lead, email="tom@acme.example")) == 1
    else:
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert _stored(engine, Lead, email="tom@acme.example") == []


def test_tokens_and_link_signatures_are_compared_in_constant_time(engine, clock, monkeypatch):
    compared: list[tuple] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    api = _api(engine, load_workspace(Settings(scenarios_dir=ROOT / "scenarios", templates_dir=ROOT / "templates" / "emails")),
               clock, secret_key=NEW_KEY, secret_keys_old=OLD_KEY)
    api.post("/events", json=[], headers={"Authorization": "Bearer wrong-token-of-the-same-size"})
    assert (b"wrong-token-of-the-same-size", TOKEN.encode()) in compared
    compared.clear()
    token = tracking.sign(NEW_KEY, kind=tracking.CLICK, outbox_id=1, lead_id=1, email="a@b.example", link="https://x.example")
    api.get(f"/c/{token[:-2]}xx", follow_redirects=False)
    assert len(compared) == 2  # one constant-time comparison per verifying key, whichever matched


def test_the_demo_signs_with_a_key_of_its_own_when_none_fit_to_sign_is_set(tmp_path, monkeypatch):
    from relance.demo.run import _use_demo_settings

    for name in ("RELANCE_DATABASE_URL", "RELANCE_OUTBOX_DIR", "RELANCE_TRANSPORT"):
        monkeypatch.setenv(name, "")  # put back as they were after the test: the demo writes os.environ itself
    monkeypatch.setenv("RELANCE_SECRET_KEY", DEFAULT_SECRET_KEY)
    _use_demo_settings(tmp_path)
    chosen = os.environ["RELANCE_SECRET_KEY"]
    require_signing_keys(get_settings())
    assert chosen != DEFAULT_SECRET_KEY and get_settings().secret_key == chosen

    monkeypatch.setenv("RELANCE_SECRET_KEY", NEW_KEY)
    _use_demo_settings(tmp_path)
    assert os.environ["RELANCE_SECRET_KEY"] == NEW_KEY  # an operator's own key is kept
    get_settings.cache_clear()
