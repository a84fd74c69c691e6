"""Two API worker processes receiving the same forms at once create each lead, event and enrollment once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select
from sqlmodel import Session

from relance.plans import sync_scenarios
from relance.store.tables import Enrollment, Event, Lead
from relance.workspace import load_workspace

from harness import FULL, environment
from tests.units import committed

WELCOME = """\
scenario: welcome
trigger: {event: form_submitted}
steps:
  - id: hello
    send: hello
    subject: "Bienvenue"
"""
FORMS = 600 if FULL else 120


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(settings, tmp_path, port: int) -> subprocess.Popen:
    env = environment(settings, tmp_path / "outbox", RELANCE_API_TOKEN="t0ken-of-the-worker-tests")
    return subprocess.Popen([sys.executable, "-m", "relance.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _ready(url: str, process: subprocess.Popen) -> None:
    for _ in range(600):
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_the_same_form_posted_to_two_workers_at_once_counts_once(engine, settings, clock, folder, tmp_path):
    (folder / "scenarios" / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    committed(engine, sync_scenarios, now=clock.now(), workspace=load_workspace(settings))
    ports = [_port(), _port()]
    servers = [_serve(settings, tmp_path, port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, server in zip(urls, servers):
            _ready(url, server)
        at = clock.now().isoformat()
        form = lambda i: {"type": "form_submitted", "email": f"form{i}@acme.example", "occurred_at": at,
                          "properties": {"first_name": f"Léa{i}", "company": "ACME"}}
        posts = [(url, form(i)) for i in range(FORMS) for url in urls for _ in range(2)]  # each form 4 times, 2 per worker
        with httpx.Client(headers={"Authorization": "Bearer t0ken-of-the-worker-tests"}, timeout=60) as client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda p: client.post(f"{p[0]}/events", json=p[1]), posts))
        assert Counter(a.status_code for a in answers) == {200: 4 * FORMS}, [a.text for a in answers if a.status_code != 200][:3]
        assert sum(a.json()["stored"] for a in answers) == FORMS
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    with Session(engine) as session:
        assert session.execute(select(func.count()).select_from(Lead)).scalar() == FORMS
        assert session.execute(select(func.count()).select_from(Event)).scalar() == FORMS
        per_lead = Counter(session.execute(select(Enrollment.lead_id).where(Enrollment.scenario == "welcome")).scalars())
    assert len(per_lead) == FORMS and set(per_lead.values()) == {1}
