"""Bad-input corpus: settings, the services they point to, and webhook addresses.

Each case is (id, the bad input, the words the answer must contain). A bad setting or a service out of reach is one
line naming the setting and what to do, exit 2, for every command, with nothing stored; a webhook URL that cannot be
called is a problem at FILE:LINE:COL: step ID; a webhook destination inside the network fails that message only, with
its reason. Every case runs on SQLite and PostgreSQL (the `env` and `engine` fixtures).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from typer.testing import CliRunner

from relance.policy import NO_POLICY
from relance import webhooks
from relance.cli import app
from relance.delivery import deliver
from relance.email.templates import TemplateLibrary
from relance.email.transports import DeliveryError
from relance.settings import Settings, get_settings
from relance.store.repo import upsert_lead
from relance.store.tables import Enrollment, Event, Lead, Outbox
from tests.basis import professional


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLOSED = _closed_port()
TABLES = (Lead, Event, Outbox, Enrollment)


def _rows(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {t.__name__: session.execute(select(func.count()).select_from(t)).scalar_one() for t in TABLES}


@pytest.fixture
def stored(env, engine, clock):
    """The env project's database with one lead in it; the rows of each table, to compare after a refused command."""
    with Session(engine) as session:
        upsert_lead(session, email="lea@acme.example", now=clock.now(), first_name="Léa", fields=professional())
        session.commit()
    return _rows(engine)


def _refused(result, *words: str) -> str:
    """A setup refusal: exit 2, one line on stderr, no traceback; the line, for its words."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --------------------------------------------------------------------------- bad settings x commands

SETTINGS = [
    ("transport-pigeon", {"RELANCE_TRANSPORT": "pigeon"}, ["RELANCE_TRANSPORT='pigeon'", "file, smtp, ses, null", ".env"]),
    ("batch-size-abc", {"RELANCE_BATCH_SIZE": "abc"}, ["RELANCE_BATCH_SIZE='abc'", "not a whole number", "500"]),
    ("batch-size-zero", {"RELANCE_BATCH_SIZE": "0"}, ["RELANCE_BATCH_SIZE='0'", "more than 0"]),
    ("ses-timeout-negative", {"RELANCE_SES_TIMEOUT": "-1"}, ["RELANCE_SES_TIMEOUT='-1'", "more than 0"]),
    ("smtp-port-words", {"RELANCE_SMTP_PORT": "twenty-five"}, ["RELANCE_SMTP_PORT", "not a whole number"]),
    ("webhook-allow-bad-cidr", {"RELANCE_WEBHOOK_ALLOW": "10.0.0.0/33"}, ["RELANCE_WEBHOOK_ALLOW", "'10.0.0.0/33'", "CIDR"]),
    ("scenarios-dir-missing", {"RELANCE_SCENARIOS_DIR": "{tmp}/nope"}, ["RELANCE_SCENARIOS_DIR points to", "does not exist"]),
    ("database-url-nonsense", {"RELANCE_DATABASE_URL": "nonsense"}, ["RELANCE_DATABASE_URL", "not a database URL",
                                                                     "postgresql+psycopg://"]),
    ("database-url-unknown-driver", {"RELANCE_DATABASE_URL": "mongodb://127.0.0.1/x"},
     ["RELANCE_DATABASE_URL", "cannot load", "sqlite:///"]),
    ("database-unreachable", {"RELANCE_DATABASE_URL": f"postgresql+psycopg://postgres:pw@127.0.0.1:{CLOSED}/relance"},
     ["RELANCE_DATABASE_URL", "cannot reach the database", f"127.0.0.1:{CLOSED}", "start it", "***"]),
]
COMMANDS = [
    ("event", ["event", "downloaded", "--lead", "lea@acme.example", "--prop", "asset=livre-blanc-leads"]),
    ("report", ["report"]),
    ("outbox-list", ["outbox", "list"]),
    ("serve", ["serve", "--port", str(CLOSED)]),
]


NOT_NEEDED = {("scenarios-dir-missing", "outbox-list")}  # listing the outbox needs no scenarios: it works without them
CASES = [pytest.param(variables, words, command, id=f"{setting}-{name}")
         for setting, variables, words in SETTINGS for name, command in COMMANDS if (setting, name) not in NOT_NEEDED]


@pytest.mark.parametrize("variables, words, command", CASES)
def test_a_bad_setting_is_one_line_naming_it_and_exit_2_for_every_command(env, engine, stored, monkeypatch, variables, words,
                                                                          command):
    for key, value in variables.items():
        monkeypatch.setenv(key, value.format(tmp=env))
    get_settings.cache_clear()
    line = _refused(CliRunner().invoke(app, command), *words)
    assert "pw@" not in line  # a password is never shown
    assert _rows(engine) == stored  # nothing stored, nothing half-written


def test_a_database_out_of_reach_stops_the_tick_before_any_flow_runs(env, engine, stored, monkeypatch):
    monkeypatch.setenv("RELANCE_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{CLOSED}/relance")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["tick"])
    _refused(result, "RELANCE_DATABASE_URL", "cannot reach the database", "Connection refused")
    assert "Flow run" not in result.output
    assert _rows(engine) == stored


# --------------------------------------------------------------------------- SQS out of reach

def test_an_sqs_endpoint_out_of_reach_is_one_line_naming_what_to_check(env, engine, stored, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "RELANCE_SES_ENDPOINT_URL": f"http://127.0.0.1:{CLOSED}"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    queue = f"http://127.0.0.1:{CLOSED}/000000000000/ses-events"
    _refused(CliRunner().invoke(app, ["ses-events", "--queue-url", queue, "--once"]),
             "cannot reach the SQS queue", "RELANCE_SES_ENDPOINT_URL", "--queue-url")
    assert _rows(engine) == stored


def test_an_sqs_queue_that_does_not_exist_is_named(env, engine, stored, moto_server, monkeypatch):
    monkeypatch.setenv("RELANCE_SES_ENDPOINT_URL", moto_server[0])
    get_settings.cache_clear()
    queue = f"{moto_server[0]}/123456789012/no-such-queue"
    _refused(CliRunner().invoke(app, ["ses-events", "--queue-url", queue, "--once"]), "does not exist", "--queue-url", queue)
    assert _rows(engine) == stored


# --------------------------------------------------------------------------- webhook URLs through validate

HOOK = """\
scenario: tell-the-crm
trigger: {event: demo_requested}
steps:
  - id: tell
    notify: {webhook: "%s"}
"""
BAD_URLS = [
    ("ipv6-not-closed", "http://[::1", "the address between [ ] is not a valid IPv6 address"),
    ("no-host", "http://:80/hook", "it names no host"),
    ("space-in-host", "http://crm example.com/hook", "a space or a control character"),
    ("port-too-big", "http://crm.example.com:99999/hook", "its port is not a number from 1 to 65535"),
    ("port-words", "http://crm.example.com:http/hook", "its port is not a number from 1 to 65535"),
    ("ftp-scheme", "ftp://crm.example.com/hook", "it must start with http:// or https://"),
    ("no-scheme", "crm.example.com/hook", "it must start with http:// or https://"),
    ("cloud-metadata", "http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("loopback-postgres", "http://127.0.0.1:5432/", "127.0.0.1 is a loopback address"),
    ("loopback-ipv6", "http://[::1]:8080/hook", "::1 is a loopback address"),
    ("private-10", "http://10.1.2.3/hook", "10.1.2.3 is a private address"),
    ("unspecified", "http://0.0.0.0:8000/hook", "0.0.0.0 is an unspecified address"),
    ("mapped-private", "http://[::ffff:192.168.1.10]/hook", "a form of 192.168.1.10, is a private address"),
    ("multicast", "http://224.0.0.251/hook", "224.0.0.251 is a multicast address"),
    ("shared-cgnat", "http://100.64.0.7/hook", "100.64.0.7 is a non-public address"),
]


@pytest.mark.parametrize("url, words", [(u, w) for _, u, w in BAD_URLS], ids=[i for i, *_ in BAD_URLS])
def test_a_webhook_url_relance_cannot_or_may_not_call_is_a_problem_at_its_line(env, engine, stored, url, words):
    (env / "scenarios" / "tell.yaml").write_text(HOOK % url, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    problem = next(line for line in result.stdout.splitlines() if "tell.yaml" in line)
    assert problem.startswith(f"{env / 'scenarios' / 'tell.yaml'}:5:14: step tell: `webhook: {url}`"), problem
    assert words in problem, problem
    if "inside the network" in problem:
        assert "RELANCE_WEBHOOK_ALLOW" in problem  # what to do when the address is meant
    assert _rows(engine) == stored


def test_an_address_the_allow_list_names_validates(env, monkeypatch):
    (env / "scenarios" / "tell.yaml").write_text(HOOK % "http://10.1.2.3:8080/hook", encoding="utf-8")
    monkeypatch.setenv("RELANCE_WEBHOOK_ALLOW", "crm.internal, 10.0.0.0/8")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- destinations refused when sent


class Receiver:
    """A webhook receiver on this machine: counts the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.calls.append({"host": self.headers["Host"],
                                       "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


REFUSED_AT_SEND = [
    ("metadata", "http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("loopback-ipv6", "http://[::1]:{closed}/hook", "::1 is a loopback address"),
    ("private-192", "http://192.168.0.10/hook", "192.168.0.10 is a private address"),
    ("mapped-loopback", "http://[::ffff:127.0.0.2]:{closed}/hook", "a form of 127.0.0.2, is a loopback address"),
]


def _webhook_rows(engine, clock, urls: list[str]) -> list[int]:
    """Outbox rows of webhooks, as a notify step writes them (a scenario validated before the rule, or by hand)."""
    with Session(engine) as session:
        lead = session.exec(select(Lead)).scalars().first()
        rows = [Outbox(lead_id=lead.id, scenario="tell-the-crm", step_id="tell", template="", subject="", to_address=url,
                       status="pending", created_at=clock.now(), kind="webhook") for url in urls]
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


@pytest.mark.parametrize("url, words", [(u, w) for _, u, w in REFUSED_AT_SEND], ids=[i for i, *_ in REFUSED_AT_SEND])
def test_a_destination_inside_the_network_fails_that_message_only_with_its_reason(env, engine, stored, clock, receiver,
                                                                                  url, words):
    url = url.format(closed=CLOSED)
    allowed = f"http://127.0.0.1:{receiver.port}/hooks/lead"
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), transport="null",
                        secret_key="s3cret", webhook_allow="127.0.0.1")
    refused, sent = _webhook_rows(engine, clock, [url, allowed])
    result = deliver(engine, settings, outbox_ids=[refused, sent], now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)
    assert (result.sent, result.failed) == (1, 1)
    with Session(engine) as session:
        rows = {r.id: r for r in session.exec(select(Outbox).where(Outbox.id.in_([refused, sent]))).scalars()}
    assert rows[sent].status == "sent" and len(receiver.calls) == 1  # the other message went
    assert rows[refused].status == "failed"
    assert words in rows[refused].error and "RELANCE_WEBHOOK_ALLOW" in rows[refused].error, rows[refused].error
    assert rows[refused].error.startswith(f"webhook {url} refused: ")


def test_a_name_of_this_machine_is_refused_once_resolved(env, engine, stored, clock):
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), transport="null", secret_key="s3cret")
    [row] = _webhook_rows(engine, clock, [f"http://localhost:{CLOSED}/hook"])
    assert deliver(engine, settings, outbox_ids=[row], now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY).failed == 1
    with Session(engine) as session:
        error = session.get(Outbox, row).error
    assert "localhost resolves to" in error and "which is a loopback address" in error and "RELANCE_WEBHOOK_ALLOW" in error


def test_a_host_named_in_the_allow_list_is_reached_by_its_name(env, engine, stored, clock, receiver):
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), transport="null",
                        secret_key="s3cret", webhook_allow="localhost")
    [row] = _webhook_rows(engine, clock, [f"http://localhost:{receiver.port}/hooks/lead"])
    assert deliver(engine, settings, outbox_ids=[row], now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY).sent == 1
    assert receiver.calls[0]["host"] == f"localhost:{receiver.port}"


PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.mark.parametrize("proxy", ["dead", "listening"])
def test_a_proxy_in_the_environment_is_not_used_the_webhook_goes_to_the_checked_address(env, engine, stored, clock, receiver,
                                                                                         monkeypatch, proxy):
    """A proxy would make the connection itself, to whatever the name means to it: the check and the pinning would be
    bypassed, and a proxy inside the network would be reached unchecked. relance connects directly, always."""
    listening = Receiver() if proxy == "listening" else None
    address = f"http://127.0.0.1:{listening.port if listening else CLOSED}"
    for name in PROXIES:
        monkeypatch.setenv(name, address)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(database_url=str(engine.url.render_as_string(hide_password=False)), transport="null",
                        secret_key="s3cret", webhook_allow="127.0.0.1")
    [row] = _webhook_rows(engine, clock, [f"http://127.0.0.1:{receiver.port}/hooks/lead"])
    try:
        result = deliver(engine, settings, outbox_ids=[row], now=clock.now(), templates=TemplateLibrary(settings.templates_dir), manager=None, policy=NO_POLICY)
    finally:
        if listening:
            listening.server.shutdown()
            listening.server.server_close()
    assert result.sent == 1, result.errors
    assert [call["host"] for call in receiver.calls] == [f"127.0.0.1:{receiver.port}"]
    assert listening is None or listening.calls == []  # the proxy never saw the lead


# --------------------------------------------------------------------------- the name is checked when it is resolved


def _answers(*addresses: str):
    """A resolver that answers these addresses, one look-up after another (the last one again when out)."""
    left = list(addresses)

    def resolve(host, port, type=0):
        address = left.pop(0) if len(left) > 1 else left[0]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


def test_a_name_that_resolves_inside_is_refused_and_a_public_one_is_pinned_to_the_address_checked():
    with pytest.raises(DeliveryError) as refused:
        webhooks.target("https://crm.example.com/hook", resolve=_answers("10.9.8.7"))
    assert refused.value.retryable is False
    assert "crm.example.com resolves to 10.9.8.7, which is a private address" in str(refused.value)
    # DNS rebinding: the first look-up answers outside, a second one would answer inside; the POST goes to the first
    rebinding = _answers("93.184.216.34", "127.0.0.1")
    target = webhooks.target("https://crm.example.com:8443/hook?x=1", resolve=rebinding)
    assert target.url == "https://93.184.216.34:8443/hook?x=1"
    assert target.headers == {"Host": "crm.example.com:8443"} and target.extensions == {"sni_hostname": "crm.example.com"}


def test_a_name_with_one_address_inside_among_public_ones_is_refused():
    def resolve(host, port, type=0):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::1", port, 0, 0))]

    with pytest.raises(DeliveryError, match=r"crm.example.com resolves to fd00::1, which is a private address"):
        webhooks.target("http://crm.example.com/hook", resolve=resolve)


def test_the_pinned_address_is_what_is_connected_to(receiver):
    """The POST reaches the checked address with the real host in its Host header."""
    target = webhooks.target(f"http://hooks.example:{receiver.port}/lead", "127.0.0.0/8", resolve=_answers("127.0.0.1"))
    with httpx.Client() as client:
        client.post(target.url, json={"ok": True}, headers=target.headers)
    assert receiver.calls == [{"host": f"hooks.example:{receiver.port}", "body": {"ok": True}}]
