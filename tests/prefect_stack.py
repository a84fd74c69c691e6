"""A real Prefect server, its worker and CLI commands for tests, isolated in a temporary folder.

`isolated_stack(tmp_path)` gives a Stack whose environment has its own PREFECT_HOME, SQLite databases (Prefect's and
relance's), no telemetry, no scheduler and, unless `ui`, no UI, on a free loopback port. Its processes run in their
own process groups, their output in logs/NAME.log; `diagnosis()` is the tail of every log, for a failure message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.basis import professional
from tests.units import committed

PROJECT = Path(__file__).resolve().parents[1]
PREFECT = (str(Path(sys.executable).with_name("prefect")),)
RELANCE = (sys.executable, "-m", "relance.cli")
TICK_AT = "2026-03-02T09:00:00+00:00"  # a Monday morning, inside every send window


def free_port() -> int:
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
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.api.split(":")[-1].split("/")[0])

    def start(self, name: str, *args: str, program: Sequence[str] = PREFECT, env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        """A long-running process (`prefect ARGS` unless `program` says another; the stack's env unless `env`) in
        its own process group, output to logs/<name>.log."""
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [*program, *args], cwd=PROJECT, env=self.env if env is None else env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def run(self, name: str, *args: str) -> None:
        """A CLI command that must succeed; its output lands in logs/<name>.log either way."""
        done = subprocess.run([*PREFECT, *args], cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=120)
        (self.logs / f"{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        assert done.returncode == 0, f"`prefect {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}"

    def call(self, method: str, path: str, json: dict | None = None) -> object:
        """One API call that must succeed. The server keeps its state in SQLite: under a loaded machine a write can
        meet "database is locked" and answer 5xx, so a server error is retried a few times before the test fails
        with the body and the processes' logs."""
        for attempt in range(5):
            response = httpx.request(method, f"{self.api}{path}", json=json, timeout=30)
            if response.status_code < 500:
                break
            time.sleep(0.5 * (attempt + 1))  # backing off from a busy server we started
        assert response.is_success, f"{method} {path} -> {response.status_code}: {response.text}\n{self.diagnosis()}"
        return response.json()

    def wait_healthy(self, server: subprocess.Popen, within: float = 90) -> None:
        """Until the server answers /health; its exit, or `within` seconds, fails the test with the logs."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            if server.poll() is not None:
                pytest.fail(f"prefect server exited with {server.returncode}\n{self.diagnosis()}")
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a process we started, not waiting for time to pass
        pytest.fail(f"prefect server not healthy after {within:.0f} s\n{self.diagnosis()}")

    def start_server(self) -> subprocess.Popen:
        """`prefect server start` on the stack's port, once healthy."""
        server = self.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port))
        self.wait_healthy(server)
        return server

    def diagnosis(self) -> str:
        return "\n".join(_tail(p) for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the group: what the process started goes too
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@contextmanager
def isolated_stack(tmp_path: Path, *, ui: bool = False) -> Iterator[Stack]:
    """Server env: temp PREFECT_HOME and SQLite, no telemetry, no scheduler (a test may turn it on), the UI only
    with `ui`; relance's settings for the worker's ticks (file transport, the repository's scenarios)."""
    api = f"http://127.0.0.1:{free_port()}/api"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RELANCE_"))}
    env.update(
        RELANCE_SECRET_KEY=os.environ["RELANCE_SECRET_KEY"],  # the tests' own (tests/conftest.py): a tick refuses the default
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),  # this checkout's relance
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="true" if ui else "false",
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
    stack = Stack(api=api, env=env, logs=logs)
    try:
        yield stack
    finally:
        stack.stop()


def seed_three_downloads(env: dict[str, str]) -> list[str]:
    """Three leads who downloaded the white paper, in the database the worker will use."""
    from datetime import datetime

    from sqlmodel import Session

    from relance.ingest import IncomingEvent, ingest_events
    from relance.plans import open_store, sync_scenarios
    from relance.settings import Settings
    from relance.store.repo import upsert_lead
    from relance.workspace import load_workspace

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


def run_to_the_end(stack: Stack, run_id: str, worker: subprocess.Popen, *, deadline: float) -> dict:
    """The flow run's final state once it has one; still unfinished at `deadline` (monotonic), or its worker gone,
    fails the test with the logs."""
    state = stack.call("GET", f"/flow_runs/{run_id}")["state"]
    while state["type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        if time.monotonic() > deadline:
            pytest.fail(f"flow run still {state['name']} at the deadline\n{stack.diagnosis()}")
        if worker.poll() is not None:
            pytest.fail(f"the worker exited with {worker.returncode}\n{stack.diagnosis()}")
        time.sleep(0.5)  # polling the run we created
        state = stack.call("GET", f"/flow_runs/{run_id}")["state"]
    return state
