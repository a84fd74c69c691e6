"""The marketer's cockpit end to end, on a fresh stack: `relance prefect-server` (UI on a random port), `relance
deploy`, `relance worker`, `relance import`, `relance serve`; then one `POST /events` and, within seconds, the email
in the outbox and, in a headless Chromium, the run with its counts, who is where and the funnel, and the account.

The delay from the event to the email is measured and printed (the goal on this machine: under 10 s); the test
fails if the tick did not come from the event (a Prefect automation) or came as late as a schedule would bring it.
Screenshots are left in the test artifacts folder (tests/browser.py).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium
from tests.prefect_stack import PROJECT, RELANCE, Stack, free_port, isolated_stack

pytestmark = pytest.mark.prefect_server

DEADLINE_S = 240  # the whole stack, on a loaded machine
FROM_EVENT_S = 60  # an email later than this did not come from the event (the schedule is every 10 minutes)
TOKEN = "cockpit-test-token-0123456789"
SALON = "scenario: salon-2026\ntrigger: {event: form_submitted, where: {source: salon-2026}}\nsteps:\n  - id: bump\n    score: +5\n"
LEADS = "email,first_name,company,job_title,basis\nzoe@acme.example,Zoé,ACME,Directrice marketing,legitimate_interest\n" \
        "yann@acme.example,Yann,ACME,Responsable achats,legitimate_interest\n"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack with the UI on, over a copy of the shipped scenarios whose sending.yaml holds nothing back (the test
    runs at the wall clock's time, which may be a quiet hour), and an API token for `relance serve`."""
    folder = tmp_path / "scenarios"
    shutil.copytree(PROJECT / "scenarios", folder)
    (folder / "sending.yaml").write_text("caps: []\n", encoding="utf-8")
    (folder / "salon-2026.yaml").write_text(SALON, encoding="utf-8")  # removed later in the test
    with isolated_stack(tmp_path, ui=True) as s:
        for name in ("PREFECT_WORKER_QUERY_SECONDS", "PREFECT_WORKER_PREFETCH_SECONDS"):
            s.env.pop(name)  # `relance worker` sets them
        s.env.update(RELANCE_SCENARIOS_DIR=str(folder), RELANCE_API_TOKEN=TOKEN)
        yield s


def _relance(stack: Stack, name: str, *args: str) -> str:
    """A relance command that must succeed; its output, also in logs/<name>.log."""
    done = subprocess.run([*RELANCE, *args], cwd=PROJECT, env=dict(stack.env, COLUMNS="200"), capture_output=True,
                          text=True, timeout=180)
    (stack.logs / f"{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, f"`relance {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}\n{stack.diagnosis()}"
    return done.stdout


def _until(what: str, check, stack: Stack, processes, deadline: float):
    """`check()`'s first true value, polled; a process of the stack that exits, or the deadline, fails the test."""
    while not (found := check()):
        for proc in processes:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[:4]} exited with {proc.returncode} while waiting for {what}\n{stack.diagnosis()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} by the deadline\n{stack.diagnosis()}")
        time.sleep(0.1)  # polling the processes we started
    return found


def _online(stack: Stack) -> bool:
    answer = httpx.post(f"{stack.api}/work_pools/relance/workers/filter", json={}, timeout=10)
    return answer.status_code == 200 and any(w["status"] == "ONLINE" for w in answer.json())


def test_an_event_runs_its_scenario_s_tick_in_seconds_and_the_ui_shows_what_it_did(stack: Stack, tmp_path, request) -> None:
    started = time.monotonic()
    deadline = started + DEADLINE_S
    outbox = Path(stack.env["RELANCE_OUTBOX_DIR"])
    alone = {k: v for k, v in stack.env.items() if k != "PREFECT_API_URL"}  # the server's own terminal
    server = stack.start("server", "prefect-server", "--host", "127.0.0.1", "--port", str(stack.port), program=RELANCE,
                         env=alone)
    stack.wait_healthy(server)
    assert stack.port != 4200  # the UI is told this server's API, not Prefect's default 127.0.0.1:4200
    assert httpx.get(f"http://127.0.0.1:{stack.port}/ui-settings", timeout=10).json()["api_url"] == stack.api
    said = (stack.logs / "server.log").read_text(encoding="utf-8")
    assert f"Prefect UI: http://127.0.0.1:{stack.port}" in said and f"export PREFECT_API_URL={stack.api}\n" in said

    deployed = _relance(stack, "deploy", "deploy")
    assert "prefect.yaml: left alone" in deployed  # it records ./scenarios, not this copy
    for name in ("tick/whitepaper-nurture", "tick/re-engagement", "tick/monthly-newsletter", "tick/salon-2026", "sla/sla"):
        assert f"{name}" in deployed and "create" in deployed
    again = _relance(stack, "deploy-again", "deploy", "--dry-run")
    assert "would be: 8 unchanged" in again, again  # idempotent: nothing left to change

    worker = stack.start("worker", "worker", "--pool", "relance", "--name", "cockpit-worker", program=RELANCE)
    (tmp_path / "leads.csv").write_text(LEADS, encoding="utf-8")
    _relance(stack, "import", "import", str(tmp_path / "leads.csv"), "--source", "salon")
    port = free_port()
    api = stack.start("api", "serve", "--port", str(port), program=RELANCE)
    _until("relance serve", lambda: _answers(f"http://127.0.0.1:{port}/health"), stack, [server, worker, api], deadline)
    _until("an online worker", lambda: _online(stack), stack, [server, worker, api], deadline)

    with chromium(tmp_path / "chromium", request.node.name) as browser:
        posted = time.monotonic()
        answer = httpx.post(f"http://127.0.0.1:{port}/events", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                            json={"type": "downloaded", "email": "zoe@acme.example", "properties": {"asset": "livre-blanc-leads"}})
        assert answer.status_code == 200 and answer.json()["enrolled"] == 1, answer.text
        [email] = _until("the email in the outbox", lambda: list(outbox.glob("*.eml")), stack, [server, worker, api], deadline)
        delay = time.monotonic() - posted
        assert message_from_bytes(email.read_bytes())["To"] == "zoe@acme.example"
        assert delay < FROM_EVENT_S, f"the email left {delay:.1f} s after the event: not the event's tick\n{stack.diagnosis()}"

        def finished():
            runs = stack.call("POST", "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["whitepaper-nurture"]}}})
            return [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED")]

        [run] = _until("the tick's final state", finished, stack, [server, worker, api], deadline)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["state"]["message"] == "1 entered, 1 sent, 1 waiting"  # what it did, at a glance
        assert run["created_by"]["type"] == "AUTOMATION"  # the deployment's trigger, on relance's event

        base = f"http://127.0.0.1:{stack.port}"
        browser.open(f"{base}/runs")
        runs_page = browser.wait_for_text("tick\nwhitepaper-nurture\n", "Completed", within=60)
        shots = [browser.screenshot("runs")]
        browser.open(f"{base}/runs/flow-run/{run['id']}")
        browser.wait_for_text("whitepaper-nurture", "Completed", "Artifacts", within=60)
        shots.append(browser.screenshot("run"))
        browser.open(f"{base}/artifacts/key/report-whitepaper-nurture")  # its history, the latest version's title on top
        browser.wait_for_text("whitepaper-nurture at ", "1 in the scenario now, 1 waiting", within=60)
        shots.append(browser.screenshot("who-is-where-history"))
        browser.open(f"{base}/artifacts/artifact/{_latest(stack, 'report-whitepaper-nurture')}")
        who = browser.wait_for_text("who is where", "Funnel since the scenario started", "send-guide", "█", "100.0 %", within=60)
        shots.append(browser.screenshot("who-is-where"))
        browser.open(f"{base}/artifacts/artifact/{_latest(stack, 'account-overview')}")
        account = browser.wait_for_text("Account overview", "Leads by stage", "█", "Deliverability", within=60)
        shots.append(browser.screenshot("account"))
    seen = time.monotonic()

    # the folder changes: a new schedule for one scenario, another removed; `relance deploy` follows
    folder = Path(stack.env["RELANCE_SCENARIOS_DIR"])
    nurture = folder / "whitepaper-nurture.yaml"
    nurture.write_text(nurture.read_text(encoding="utf-8") + "schedule: 1h\n", encoding="utf-8")
    (folder / "salon-2026.yaml").unlink()
    followed = _relance(stack, "deploy-changed", "deploy")
    assert "tick/whitepaper-nurture   update      schedule: every 10m -> every 1h" in followed, followed
    assert "1 updated, 6 unchanged, 1 paused" in followed, followed
    salon = stack.call("GET", "/deployments/name/tick/salon-2026")
    assert salon["paused"] is True  # kept, with its runs and artifacts; no trigger runs it any more
    assert sorted(a["name"] for a in stack.call("POST", "/automations/filter", {})) == [
        "monthly-newsletter: work due now", "re-engagement: work due now", "whitepaper-nurture: work due now"]

    assert "Oops" not in runs_page + who + account
    assert all(shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000 for shot in shots)
    stack.stop()  # SIGTERM to each relance command: it passes it to its prefect child and ends with it
    assert [p.returncode for p in (server, worker)] == [128 + signal.SIGTERM, 0], stack.diagnosis()
    print(f"\ncockpit test: event to email {delay:.1f} s; pages shown {seen - posted - delay:.1f} s later; "
          f"total {seen - started:.1f} s; screenshots {', '.join(str(s) for s in shots)}")


def _latest(stack: Stack, key: str) -> str:
    """The id of the newest version of an artifact (its page shows its content)."""
    [found] = stack.call("POST", "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
    return found["id"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
