"""The production path end to end: a real Prefect server, `prefect deploy`, a process worker, a tick run.

The second test leaves the server's scheduler on: the runs come from the schedules, not from a request.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path

import httpx
import pytest
from tests.units import committed
from tests.basis import professional

pytestmark = pytest.mark.prefect_server

PROJECT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
DEADLINE_S = 240  # a run not finished by then is stuck: fail with the logs
TICK_AT = "2026-03-02T09:00:00+00:00"  # a Monday morning, inside every send window
SCHEDULED_WITHIN_S = 60  # from `prefect deploy` to the scheduler's runs: its loops run every few seconds here
MIN_RUNS = 3  # PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS' default: the scheduler keeps at least this many ahead
DEPLOYMENTS = ["decay", "monthly-newsletter", "re-engagement", "reengage", "sla", "whitepaper-nurture"]
# The server log, read as records: a record starts with Prefect's "HH:MM:SS.mmm | LEVEL" or uvicorn's "LEVEL:",
# the lines after it (a traceback) belong to it. A record is an error when it says so, and the scheduler's when it
# names the scheduler's services or carries SQLAlchemy 2.1's "InvalidRequestError: Can't evaluate bulk DML
# statement", which every scheduler loop raised. Other records (a busy SQLite's 5xx, retried) are not counted.
LOG_RECORD = re.compile(r"^(\d\d:\d\d:\d\d\.\d+ \||(INFO|WARNING|ERROR|CRITICAL):)")
AN_ERROR = re.compile(r"Traceback|Error|\| ERROR|\| CRITICAL|^(ERROR|CRITICAL):", re.MULTILINE)
THE_SCHEDULERS = re.compile(r"schedule_(recent_)?deployments|services[/.]scheduler|InvalidRequestError|bulk DML")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else "(no output)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    api: str
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen]

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """A long-running process in its own process group, output to logs/<name>.log."""
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [PREFECT, *args], cwd=PROJECT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(proc)
        return proc

    def run(self, name: str, *args: str) -> None:
        """A CLI command that must succeed; its output lands in logs/<name>.log either way."""
        done = subprocess.run([PREFECT, *args], cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=120)
        (self.logs / f"{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        assert done.returncode == 0, f"`prefect {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}"

    def diagnosis(self) -> str:
        return "\n".join(_tail(p) for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the group: `prefect server start` runs uvicorn as a child
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _wait_healthy(client: httpx.Client, stack: Stack, server: subprocess.Popen, within: float) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited with {server.returncode}\n{stack.diagnosis()}")
        try:
            if client.get("/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)  # polling a process we started, not waiting for time to pass
    pytest.fail(f"prefect server not healthy after {within:.0f} s\n{stack.diagnosis()}")


def _call(client: httpx.Client, stack: Stack, method: str, path: str, json: dict | None = None) -> object:
    """One API call that must succeed. The server keeps its state in SQLite: under a loaded machine a write can
    meet "database is locked" and answer 5xx, so a server error is retried a few times before the test fails
    with the body and the processes' logs."""
    for attempt in range(5):
        response = client.request(method, path, json=json, timeout=30)
        if response.status_code < 500:
            break
        time.sleep(0.5 * (attempt + 1))  # backing off from a busy server we started
    assert response.is_success, f"{method} {path} -> {response.status_code}: {response.text}\n{stack.diagnosis()}"
    return response.json()


def _scheduler_errors(stack: Stack) -> list[str]:
    """The lines of the server log's error records that come from the scheduler (see LOG_RECORD)."""
    log = stack.logs / "server.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    records: list[list[str]] = [[]]
    for line in text.splitlines():
        if LOG_RECORD.match(line):
            records.append([])
        records[-1].append(line)
    return [
        line for record in records
        if AN_ERROR.search(body := "\n".join(record)) and THE_SCHEDULERS.search(body)
        for line in record
    ]


def _first_error(errors: list[str]) -> str:
    """The exception itself when the log has one (`sqlalchemy.exc.InvalidRequestError: ...`), else the first line."""
    raised = [line.strip() for line in errors if re.match(r"\s*[\w.]+(Error|Exception): ", line)]
    return (raised or errors)[0]


def _start_server(stack: Stack, client: httpx.Client) -> subprocess.Popen:
    server = stack.start("server", "server", "start", "--host", "127.0.0.1", "--port", stack.api.split(":")[-1].split("/")[0])
    _wait_healthy(client, stack, server, within=90)
    return server


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Server env: temp PREFECT_HOME and SQLite, no telemetry, no UI, no scheduler (a test may turn it on)."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RELANCE_"))}
    env.update(
        RELANCE_SECRET_KEY=os.environ["RELANCE_SECRET_KEY"],  # the tests' own (tests/conftest.py): a tick refuses the default
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        # The deployments' 10-minute schedules must not start runs of their own during the test.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        PREFECT_API_URL=api,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        PREFECT_CLI_PROMPT="false",
        RELANCE_DATABASE_URL=f"sqlite:///{tmp_path / 'relance.db'}",
        RELANCE_OUTBOX_DIR=str(tmp_path / "outbox"),
        RELANCE_TRANSPORT="file",
        RELANCE_SCENARIOS_DIR=str(PROJECT / "scenarios"),
        RELANCE_TEMPLATES_DIR=str(PROJECT / "templates" / "emails"),
    )
    s = Stack(api=api, env=env, logs=logs, processes=[])
    try:
        yield s
    finally:
        s.stop()


def _seed_three_downloads(env: dict[str, str]) -> list[str]:
    """Three leads who downloaded the white paper, in the database the worker will use."""
    from datetime import datetime

    from sqlmodel import Session

    from relance.ingest import IncomingEvent, ingest_events
    from relance.workspace import load_workspace
    from relance.plans import open_store, sync_scenarios
    from relance.settings import Settings
    from relance.store.repo import upsert_lead

    settings = Settings(
        database_url=env["RELANCE_DATABASE_URL"], scenarios_dir=env["RELANCE_SCENARIOS_DIR"],
        templates_dir=env["RELANCE_TEMPLATES_DIR"], outbox_dir=env["RELANCE_OUTBOX_DIR"], transport="file",
    )
    now = datetime.fromisoformat(TICK_AT)
    emails = [f"lea{i}@acme.example" for i in range(3)]
    engine = open_store(settings)
    workspace = load_workspace(settings)
    committed(engine, sync_scenarios, now=now, workspace=workspace)
    with Session(engine) as session:
        for i, email in enumerate(emails):
            upsert_lead(session, email=email, now=now, first_name=f"Léa{i}", company="ACME", fields=professional())
        session.commit()
    downloads = [IncomingEvent("downloaded", e, now, {"asset": "livre-blanc-leads"}) for e in emails]
    assert committed(engine, ingest_events, workspace=workspace, events=downloads, now=now).enrolled == 3
    engine.dispose()
    return emails


def test_a_deployed_tick_runs_on_a_process_worker_and_publishes_its_counts(stack: Stack) -> None:
    started = time.monotonic()
    emails = _seed_three_downloads(stack.env)
    server = stack.start("server", "server", "start", "--host", "127.0.0.1", "--port", stack.api.split(":")[-1].split("/")[0])
    with httpx.Client(base_url=stack.api) as client:
        _wait_healthy(client, stack, server, within=90)
        up = time.monotonic()

        _call(client, stack, "POST", "/work_pools/", {"name": "relance", "type": "process"})
        worker = stack.start("worker", "worker", "start", "--pool", "relance", "--name", "test-worker")
        stack.run("deploy", "deploy", "--all")
        deployed = time.monotonic()

        deployments = _call(client, stack, "POST", "/deployments/filter", {})
        assert sorted(d["name"] for d in deployments) == ["decay", "monthly-newsletter", "re-engagement", "reengage", "sla", "whitepaper-nurture"]
        decay = next(d for d in deployments if d["name"] == "decay")
        assert decay["entrypoint"] == "flows/housekeeping.py:decay"
        nurture = next(d for d in deployments if d["name"] == "whitepaper-nurture")
        assert nurture["entrypoint"] == "flows/tick.py:tick"
        assert nurture["parameters"] == {"scenario": "whitepaper-nurture"}
        assert nurture["work_pool_name"] == "relance"
        assert nurture["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}
        ]
        assert [s["schedule"]["interval"] for s in nurture["schedules"]] == [600.0]

        # The idempotency key makes a retried create return the same run rather than a second one.
        body = {"parameters": {"now": TICK_AT}, "idempotency_key": "server-test-tick"}
        run = _call(client, stack, "POST", f"/deployments/{nurture['id']}/create_flow_run", body)
        state = run["state"]
        while state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            if time.monotonic() - started > DEADLINE_S:
                pytest.fail(f"flow run still {state['name']} after {DEADLINE_S} s\n{stack.diagnosis()}")
            if worker.poll() is not None:
                pytest.fail(f"the worker exited with {worker.returncode}\n{stack.diagnosis()}")
            time.sleep(0.5)  # polling the run we created
            state = _call(client, stack, "GET", f"/flow_runs/{run['id']}")["state"]
        finished = time.monotonic()

        assert state["type"] == "COMPLETED", f"tick ended {state['name']}: {state.get('message')}\n{stack.diagnosis()}"
        flow_run = _call(client, stack, "GET", f"/flow_runs/{run['id']}")
        assert flow_run["name"] == "whitepaper-nurture"
        artifacts = _call(
            client, stack, "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["tick-whitepaper-nurture"]}}}
        )
        assert [(a["type"], a["flow_run_id"]) for a in artifacts] == [("table", run["id"])]
        # the three leads entered through their download events; the tick ran their first step and left them waiting
        assert artifacts[0]["description"].startswith("whitepaper-nurture: 3 entered, 3 due, 1 batch, 3 sent, 3 waiting")
        sent = Path(stack.env["RELANCE_OUTBOX_DIR"]).glob("*.eml")
        assert sorted(message_from_bytes(p.read_bytes())["To"] for p in sent) == emails

    stack.stop()
    assert all(p.returncode is not None for p in stack.processes)
    print(
        f"\nprefect server test: server up {up - started:.1f} s, deployed {deployed - up:.1f} s, "
        f"run done {finished - deployed:.1f} s, total {time.monotonic() - started:.1f} s"
    )


def test_the_servers_scheduler_creates_the_runs_and_a_worker_completes_one(stack: Stack) -> None:
    """`prefect deploy --all` of prefect.yaml, then nothing but the server's scheduler: it creates the runs of every
    deployment, and a run it created for a 15 s schedule is picked up by `prefect worker start` and completes. No
    run is created by hand, and the server logs no error (SQLAlchemy 2.1 made every scheduler loop raise)."""
    started = time.monotonic()
    stack.env.update(
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
        # The main loop runs every 60 s by default; the loop for just-updated deployments every 5 s.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
    )
    with httpx.Client(base_url=stack.api) as client:
        server = _start_server(stack, client)
        _call(client, stack, "POST", "/work_pools/", {"name": "relance", "type": "process"})
        stack.run("deploy", "deploy", "--all")
        deployed = time.monotonic()
        deployments = {d["name"]: d for d in _call(client, stack, "POST", "/deployments/filter", {})}
        assert sorted(deployments) == DEPLOYMENTS

        # 1. prefect.yaml's own schedules (600 s, hourly, two crons): the scheduler fills each one ahead.
        by_name = {d["id"]: name for name, d in deployments.items()}
        while True:
            if errors := _scheduler_errors(stack):
                pytest.fail(f"the scheduler logged an error: {_first_error(errors)}\n{stack.diagnosis()}")
            if server.poll() is not None:
                pytest.fail(f"prefect server exited with {server.returncode}\n{stack.diagnosis()}")
            runs = _call(client, stack, "POST", "/flow_runs/filter", {"limit": 200})
            counts = {name: 0 for name in DEPLOYMENTS}
            for run in runs:
                if run["auto_scheduled"] and run["state"]["type"] == "SCHEDULED":
                    counts[by_name[run["deployment_id"]]] += 1
            if min(counts.values()) >= MIN_RUNS:
                break
            if time.monotonic() - deployed > SCHEDULED_WITHIN_S:
                pytest.fail(
                    f"the scheduler created no runs for some deployments {SCHEDULED_WITHIN_S} s after `prefect deploy`: "
                    f"scheduled runs per deployment {counts}\n{stack.diagnosis()}"
                )
            time.sleep(0.5)  # polling the server we started
        scheduled = time.monotonic()
        assert all(run["created_by"]["type"] == "SCHEDULE" for run in runs if run["auto_scheduled"])
        nurture_runs = [r for r in runs if r["deployment_id"] == deployments["whitepaper-nurture"]["id"]]
        starts = sorted(r["expected_start_time"] for r in nurture_runs)
        assert len(starts) >= 6, starts  # every 10 minutes, at least an hour ahead (MIN_SCHEDULED_TIME)
        assert all(r["parameters"] == {"scenario": "whitepaper-nurture"} for r in nurture_runs)

        # 2. A schedule short enough to come due during the test, then a worker: the scheduler's run must complete.
        stack.run(
            "schedule", "deployment", "schedule", "create", "tick/whitepaper-nurture", "--interval", "15", "--replace", "-y"
        )
        nurture = _call(client, stack, "GET", f"/deployments/{deployments['whitepaper-nurture']['id']}")
        assert [s["schedule"]["interval"] for s in nurture["schedules"]] == [15.0]
        schedule_id = nurture["schedules"][0]["id"]
        worker = stack.start("worker", "worker", "start", "--pool", "relance", "--name", "test-worker")
        body = {"flow_runs": {"deployment_id": {"any_": [nurture["id"]]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200}
        done = None
        while done is None:
            if errors := _scheduler_errors(stack):
                pytest.fail(f"the scheduler logged an error: {_first_error(errors)}\n{stack.diagnosis()}")
            if worker.poll() is not None:
                pytest.fail(f"the worker exited with {worker.returncode}\n{stack.diagnosis()}")
            runs = [r for r in _call(client, stack, "POST", "/flow_runs/filter", body) if r["auto_scheduled"]]
            for run in runs:
                if run["state"]["type"] in ("FAILED", "CRASHED", "CANCELLED"):
                    state = run["state"]
                    pytest.fail(f"scheduled tick ended {state['name']}: {state.get('message')}\n{stack.diagnosis()}")
                if run["state"]["type"] == "COMPLETED":
                    done = run
            if done is None and time.monotonic() - started > DEADLINE_S:
                states = [(r["expected_start_time"], r["state"]["name"]) for r in runs[:5]]
                pytest.fail(f"no scheduled tick completed after {DEADLINE_S} s; first runs {states}\n{stack.diagnosis()}")
            time.sleep(0.5)  # polling the runs the scheduler created
        finished = time.monotonic()

        assert done["created_by"]["type"] == "SCHEDULE" and done["created_by"]["id"] == schedule_id
        assert done["idempotency_key"].startswith("scheduled ")  # the scheduler's own key, not a manual run's
        assert done["name"] == "whitepaper-nurture" and done["parameters"] == {"scenario": "whitepaper-nurture"}
        assert done["work_pool_name"] == "relance"
        artifacts = _call(
            client, stack, "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["tick-whitepaper-nurture"]}}}
        )
        assert done["id"] in [a["flow_run_id"] for a in artifacts]
        assert _scheduler_errors(stack) == [], stack.diagnosis()

    stack.stop()
    print(
        f"\nprefect scheduler test: scheduled {scheduled - deployed:.1f} s after deploy {counts}, "
        f"scheduled tick done {finished - scheduled:.1f} s later, total {time.monotonic() - started:.1f} s"
    )
