"""`relance tick` leaves no process behind: not when it ends, not when it is killed with SIGKILL.

The real command in a subprocess, on the embedded defaults (no PREFECT_API_URL): it starts a local
Prefect API as a child. The processes are found by walking /proc, and recognised afterwards by
their start time, so that a reused PID is not taken for a survivor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
RELANCE = str(Path(sys.executable).with_name("relance"))
API_MARKERS = ("relance.prefect_api", "prefect.server.api.server:create_app")  # ours, or Prefect's own
STARTUP_S = 180  # two busy cores: the API child may take long to come up
GONE_WITHIN_S = 10


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live process under `root`."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] != "Z":
            children.setdefault(stat[0], []).append((int(entry.name), stat[2]))
    found, todo = {}, [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            found[pid] = started
            todo.append(pid)
    return found


def _alive(processes: dict[int, int]) -> dict[int, str]:
    """Those of `processes` still running (a zombie has exited), with their command line."""
    left = {}
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat and stat[2] == started and stat[1] != "Z":
            left[pid] = _cmdline(pid)
    return left


def _port(cmdline: str) -> int:
    words = cmdline.split()
    return int(words[words.index("--port") + 1])


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_gone(processes: dict[int, int], within: float) -> dict[int, str]:
    end = time.monotonic() + within
    while (left := _alive(processes)) and time.monotonic() < end:
        time.sleep(0.1)  # polling processes we started
    return left


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RELANCE_"))}
    env.update(
        RELANCE_SECRET_KEY=os.environ["RELANCE_SECRET_KEY"],  # the tests' own (tests/conftest.py): a tick refuses the default
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RELANCE_DATABASE_URL=f"sqlite:///{tmp_path / 'relance.db'}",
        RELANCE_SCENARIOS_DIR=str(PROJECT / "scenarios"),
        RELANCE_TEMPLATES_DIR=str(PROJECT / "templates" / "emails"),
        RELANCE_TRANSPORT="null",
        RELANCE_PREFECT_STARTUP_TIMEOUT=str(STARTUP_S),
    )
    return env


@pytest.fixture
def seen() -> Iterator[dict[int, int]]:
    """Every process a test saw under relance; any still running at the end is killed (a failed run leaks nothing)."""
    processes: dict[int, int] = {}
    yield processes
    for pid in _alive(processes):
        os.kill(pid, signal.SIGKILL)


def _relance(env: dict[str, str], tmp_path: Path, *args: str, cores: set[int] | None = None) -> subprocess.Popen:
    """`relance ARGS` in the background, its output in relance.log; on `cores` only if given (its children too)."""
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    with (tmp_path / "relance.log").open("wb") as out:
        return subprocess.Popen([RELANCE, *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)


def _output(tmp_path: Path) -> str:
    return (tmp_path / "relance.log").read_text(encoding="utf-8", errors="replace")


def _watch(relance: subprocess.Popen, seen: dict[int, int], commands: dict[int, str]) -> None:
    found = _descendants(relance.pid)
    seen.update(found)
    for pid in found:
        commands.setdefault(pid, _cmdline(pid))


def _follow(relance: subprocess.Popen, seen: dict[int, int], within: float) -> dict[int, str]:
    """Watch relance's process tree until it exits (killed after `within` s); the command line of each process seen."""
    commands: dict[int, str] = {}
    try:
        end = time.monotonic() + within
        while relance.poll() is None and time.monotonic() < end:
            _watch(relance, seen, commands)
            time.sleep(0.1)  # polling the process tree we started
    finally:
        if relance.poll() is None:
            relance.kill()
        relance.wait()
    return commands


def _wait_for_api(relance: subprocess.Popen, tmp_path: Path, seen: dict[int, int], *, serving: bool) -> str:
    """The command line of relance's Prefect API child once it exists (and, if `serving`, answers)."""
    commands: dict[int, str] = {}
    end = time.monotonic() + STARTUP_S
    while time.monotonic() < end:
        _watch(relance, seen, commands)
        api = next((c for c in commands.values() if any(m in c for m in API_MARKERS)), None)
        if api is not None and (not serving or _answers(_port(api))):
            return api
        if relance.poll() is not None:
            pytest.fail(f"relance tick exited ({relance.returncode}) before its API was up:\n{_output(tmp_path)}")
        time.sleep(0.05)  # polling the process tree we started
    pytest.fail(f"no Prefect API child of relance tick after {STARTUP_S} s:\n{_output(tmp_path)}")


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_a_killed_tick_leaves_no_process_behind(env, tmp_path, seen, when):
    relance = _relance(env, tmp_path, "tick")  # every scenario: several flow runs, time to kill it mid-way
    try:
        api = _wait_for_api(relance, tmp_path, seen, serving=when == "serving")
        seen.update(_descendants(relance.pid))
        assert relance.poll() is None, f"relance tick ended before it could be killed:\n{_output(tmp_path)}"
        relance.kill()
        relance.wait(timeout=10)

        left = _wait_gone(seen, GONE_WITHIN_S)

        assert not left, f"still running {GONE_WITHIN_S} s after relance tick was killed ({when}; API: {api}): {left}"
    finally:
        if relance.poll() is None:
            relance.kill()
            relance.wait()


def test_a_tick_that_ends_leaves_no_process_behind_and_its_api_served(env, tmp_path, seen):
    relance = _relance(env, tmp_path, "tick", "whitepaper-nurture")
    try:
        api = _wait_for_api(relance, tmp_path, seen, serving=False)
    except BaseException:
        relance.kill()
        relance.wait()
        raise
    commands = _follow(relance, seen, STARTUP_S + 60)
    text = _output(tmp_path)

    assert relance.returncode == 0, text
    assert "-m relance.prefect_api" in api
    assert not [c for c in commands.values() if API_MARKERS[1] in c], "Prefect started an ephemeral server of its own"
    assert "Tick" in text, text
    table = text[text.index("Tick"):]  # the flow run went through the API: its counts are printed
    assert "whitepaper-nurture" in table and "due" in table and "batches" in table, text
    assert not _alive(seen), f"still running after relance tick ended: {_alive(seen)}"


@pytest.mark.parametrize("failure", ["timeout", "exit"])
def test_an_api_that_cannot_start_is_one_sentence_and_leaves_nothing(env, tmp_path, seen, failure):
    if failure == "timeout":
        env["RELANCE_PREFECT_STARTUP_TIMEOUT"] = "0.5"
    else:  # the server cannot open its database: it exits while starting
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'prefect.db'}"
    relance = _relance(env, tmp_path, "tick", "whitepaper-nurture")
    _follow(relance, seen, STARTUP_S)
    text = _output(tmp_path)

    assert relance.returncode == 1, text
    assert "Traceback" not in text, text
    error = " ".join(text[text.index("error: "):].split())
    assert error.startswith("error: Prefect's local API did not answer within 0.5 s" if failure == "timeout"
                            else "error: Prefect's local API exited with code 3 while starting (its last output:"), error
    assert error.endswith("start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api."), error
    assert not _alive(seen), f"still running after relance tick failed: {_alive(seen)}"


HOGS_PER_CORE = 3  # at load ~6 on 2 cores Prefect's own 20 s start-up wait ran out (2 ticks of 2)
# `make test` loads one core as the production machine's were loaded (the tick is pinned to it): the other tests keep
# the rest of the machine. RELANCE_TEST_FULL=1 loads every core, the tick free to run on any of them.
FULL = os.environ.get("RELANCE_TEST_FULL") == "1"


@pytest.fixture
def busy_cores() -> Iterator[set[int]]:
    """The cores kept busy for the test's length by HOGS_PER_CORE processes each at normal priority (`yes` into
    /dev/null, pinned to them): every core under RELANCE_TEST_FULL=1, else one."""
    mine = sorted(os.sched_getaffinity(0))
    cores = set(mine) if FULL else {mine[-1]}
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL, preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}))
            for core in cores for _ in range(HOGS_PER_CORE)]
    try:
        yield cores
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_a_tick_on_a_busy_machine_waits_for_its_api_says_so_and_completes(env, tmp_path, seen, busy_cores):
    env.pop("RELANCE_PREFECT_STARTUP_TIMEOUT")  # the product's default, not the tests' generous one
    relance = _relance(env, tmp_path, "tick", "whitepaper-nurture", cores=None if FULL else busy_cores)
    commands = _follow(relance, seen, STARTUP_S + 120)
    text = _output(tmp_path)

    assert relance.returncode == 0, f"with {HOGS_PER_CORE} busy processes on each of the cores {sorted(busy_cores)}:\n{text}"
    assert "Traceback" not in text and "Timed out" not in text, text
    assert "Starting Prefect's local API (up to 180 s on a busy machine)..." in text, text
    assert "whitepaper-nurture" in text[text.index("Tick"):], text
    assert any("-m relance.prefect_api" in c for c in commands.values()), commands
    assert not _alive(seen), f"still running after relance tick ended: {_alive(seen)}"
