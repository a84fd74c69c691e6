"""The operator path on a port that is not 4200, seen in a browser: `relance prefect-server` (API and UI),
`prefect deploy --all`, `relance worker`, one tick; headless Chromium then finds the run on the UI's runs page.

Plain `prefect server start --port P` tells its UI to call the API at 127.0.0.1:4200: the page shows "Oops" and
no run. The screenshot of the runs page is left in the test artifacts folder (tests/browser.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium
from tests.prefect_stack import PROJECT, RELANCE, TICK_AT, Stack, isolated_stack, run_to_the_end, seed_three_downloads

pytestmark = pytest.mark.prefect_server

DEADLINE_S = 120  # a stack not done by then is stuck: fail with the logs


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A server env of its own with the UI on; the worker's polling left to `relance worker`."""
    with isolated_stack(tmp_path, ui=True) as s:
        for name in ("PREFECT_WORKER_QUERY_SECONDS", "PREFECT_WORKER_PREFETCH_SECONDS"):
            s.env.pop(name)
        yield s


def _wait_for_pool(stack: Stack, name: str, worker, deadline: float) -> dict:
    """The work pool once `relance worker` has created it."""
    while True:
        answer = httpx.get(f"{stack.api}/work_pools/{name}", timeout=10)
        if answer.status_code == 200:
            return answer.json()
        if worker.poll() is not None:
            pytest.fail(f"relance worker exited with {worker.returncode}\n{stack.diagnosis()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no work pool {name!r} yet ({answer.status_code})\n{stack.diagnosis()}")
        time.sleep(0.3)  # polling the worker we started


def _deploy_nurture(stack: Stack) -> dict:
    """prefect.yaml's whitepaper-nurture deployment, created through the API as `prefect deploy` would (its
    entrypoint, parameters, tags, pool, this folder as the working directory): `prefect deploy --all` itself is
    tested by test_prefect_server.py, and takes longer than the rest of this test."""
    from ruamel.yaml import YAML

    declared = YAML(typ="safe").load((PROJECT / "prefect.yaml").read_text(encoding="utf-8"))
    [entry] = [d for d in declared["deployments"] if d["name"] == "whitepaper-nurture"]
    flow = stack.call("POST", "/flows/", {"name": entry["entrypoint"].split(":")[-1]})
    return stack.call("POST", "/deployments/", {
        "name": entry["name"], "flow_id": flow["id"], "entrypoint": entry["entrypoint"],
        "parameters": entry["parameters"], "tags": entry["tags"], "work_pool_name": entry["work_pool"]["name"],
        "work_queue_name": entry["work_pool"]["work_queue_name"],
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}],
    })


def test_the_ui_on_a_port_not_4200_shows_the_tick_run_of_a_relance_started_stack(stack: Stack, tmp_path, request) -> None:
    started = time.monotonic()
    deadline = started + DEADLINE_S
    seed_three_downloads(stack.env)
    # the server's terminal, as an operator's: no PREFECT_API_URL (were it this server's, Prefect would tell the UI)
    alone = {k: v for k, v in stack.env.items() if k != "PREFECT_API_URL"}
    server = stack.start("server", "prefect-server", "--host", "127.0.0.1", "--port", str(stack.port), program=RELANCE,
                         env=alone)
    stack.wait_healthy(server)
    up = time.monotonic()
    assert stack.port != 4200
    # what the browser is told: the API of this server, not Prefect's default 127.0.0.1:4200
    assert httpx.get(f"http://127.0.0.1:{stack.port}/ui-settings", timeout=10).json()["api_url"] == stack.api
    said = (stack.logs / "server.log").read_text(encoding="utf-8")
    assert f"Prefect UI: http://127.0.0.1:{stack.port}" in said
    assert f"export PREFECT_API_URL={stack.api}\n" in said

    worker = stack.start("worker", "worker", "--pool", "relance", "--name", "ui-test-worker", program=RELANCE)
    with chromium(tmp_path / "chromium", request.node.name) as browser:  # it starts while the worker does
        assert _wait_for_pool(stack, "relance", worker, deadline)["type"] == "process"
        nurture = _deploy_nurture(stack)
        deployed = time.monotonic()
        run = stack.call("POST", f"/deployments/{nurture['id']}/create_flow_run",
                         {"parameters": {"now": TICK_AT}, "idempotency_key": "ui-test-tick"})
        state = run_to_the_end(stack, run["id"], worker, deadline=deadline)
        assert state["type"] == "COMPLETED", f"tick ended {state['name']}: {state.get('message')}\n{stack.diagnosis()}"
        done = time.monotonic()

        browser.open(f"http://127.0.0.1:{stack.port}/runs")
        # the run's entry in the list: its flow's name, then its own (the flow's comes from a second API call)
        shown = browser.wait_for_text("tick\nwhitepaper-nurture\n", within=30)
        shot = browser.screenshot("runs")
    seen = time.monotonic()
    entry = shown[shown.index("tick\nwhitepaper-nurture\n"):]
    assert "\nCompleted\n" in entry.split("Parameters")[0], entry
    assert "Oops" not in shown
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stack.stop()  # SIGTERM to each relance command alone: it passes it to its prefect child and ends with it
    # the child's code (the server's uvicorn dies of the signal: 128 + 15), not -9 from stop()'s SIGKILL fallback
    assert [p.returncode for p in (server, worker)] == [128 + signal.SIGTERM, 0], stack.diagnosis()
    with pytest.raises(httpx.ConnectError):  # the server is gone with its relance command
        httpx.get(f"{stack.api}/health", timeout=5)
    print(f"\nprefect UI test: server up {up - started:.1f} s, pool and deployment {deployed - up:.1f} s, "
          f"run done {done - deployed:.1f} s, page shown {seen - done:.1f} s, total {seen - started:.1f} s; {shot}")
