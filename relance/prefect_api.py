"""Prefect's local API for one relance process, in a child that dies with its parent.

With no PREFECT_API_URL, Prefect 3 starts an "ephemeral" API server in a child process of its
own that only an atexit hook stops: a parent killed with SIGKILL leaves it running under PID 1.
relance starts that API itself instead, the same way (uvicorn on Prefect's app factory, the same
environment), in a child that asks the kernel for SIGTERM when its parent dies
(prctl(PR_SET_PDEATHSIG), Linux) and checks its parent is still there once that is set. One API
per process, reused by every flow run of that process and stopped at exit.

    python -m relance.prefect_api --port N --parent PID     # the child; never run it by hand

Nothing here imports Prefect at module level: `relance` imports and runs without it.
"""

from __future__ import annotations

import argparse
import atexit
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import IO, Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SAY_AFTER_S = 3.0  # a start-up this slow is worth a line on stderr
STOP_WAIT_S = 5.0  # after SIGTERM, then SIGKILL
SERVER = "prefect.server.api.server:create_app"
USE_A_SERVER = "start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"


class PrefectAPIError(RuntimeError):
    """Prefect's local API could not start or stopped; the message says what to do."""


def startup_timeout() -> float:
    """RELANCE_PREFECT_STARTUP_TIMEOUT (seconds; environment or .env)."""
    from relance.settings import Settings

    return Settings().prefect_startup_timeout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(*, settings: bool = True) -> dict[str, str]:
    """What Prefect gives its own ephemeral server: this environment, the current Prefect settings, no UI.

    Without `settings`, Prefect is not imported (seconds): the child reads the same profile and
    environment itself, and only settings changed inside this process are not passed on."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the server is the API: it calls no other
    env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    if settings:
        from prefect.settings import get_current_settings

        env.update(get_current_settings().to_environment_variables(exclude_unset=True))
    env.pop("PREFECT_API_URL", None)
    # The server would send telemetry, and there is nowhere to send it; an operator may still opt in (environment).
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


class LocalAPI:
    """One child process serving Prefect's API on 127.0.0.1; `start()` returns before it answers."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._output: IO[bytes] | None = None
        self._env: dict[str, str] = {}
        self._ready = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, *, settings: bool = True) -> "LocalAPI":
        self._env = _server_env(settings=settings)
        self._spawn()
        atexit.register(self.stop)
        return self

    def _spawn(self) -> None:
        self.port = _free_port()
        if self._output is not None:
            self._output.close()
        self._output = output = tempfile.TemporaryFile()
        args = [sys.executable, "-m", "relance.prefect_api", "--port", str(self.port), "--parent", str(os.getpid())]
        spawn = lambda: subprocess.Popen(args, env=self._env, stdin=subprocess.DEVNULL, stdout=output,  # noqa: E731
                                         stderr=subprocess.STDOUT)
        try:
            if threading.current_thread() is threading.main_thread():
                self.process = spawn()
            else:
                self.process = _launcher().run(spawn)
        except OSError as exc:
            raise PrefectAPIError(f"Prefect's local API could not be started ({exc}); {USE_A_SERVER}.") from exc

    def wait_ready(self, timeout: float | None = None, say: Callable[[str], None] | None = None) -> str:
        """Block until GET /api/health answers; returns the API URL. Raises PrefectAPIError if it exits or does not answer in time."""
        if self._ready:
            self.check()
            return self.url
        timeout = startup_timeout() if timeout is None else timeout
        say = say or _say
        started = time.monotonic()
        said = False
        port_clashes = 0
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                if code == 3 and "address already in use" in self.output_tail().lower() and port_clashes < 3:
                    port_clashes += 1  # another process took the free port first: pick another
                    self._spawn()
                    continue
                tail = self._tail_clause()
                self.stop()
                raise PrefectAPIError(f"Prefect's local API exited with code {code} while starting{tail}; {USE_A_SERVER}.")
            if _healthy(self.url):
                self._ready = True
                return self.url
            waited = time.monotonic() - started
            if waited > timeout:
                tail = self._tail_clause()
                self.stop()
                raise PrefectAPIError(f"Prefect's local API did not answer within {timeout:g} s{tail}; "
                                      f"set RELANCE_PREFECT_STARTUP_TIMEOUT higher, or {USE_A_SERVER}.")
            if not said and waited > SAY_AFTER_S:
                say(f"Starting Prefect's local API (up to {timeout:g} s on a busy machine)...")
                said = True
            time.sleep(0.1)  # polling the child we started

    def check(self) -> None:
        """Raise PrefectAPIError if the child is no longer running (e.g. after a failed flow run)."""
        if self.process is None:
            raise PrefectAPIError(f"Prefect's local API is not running; {USE_A_SERVER}.")
        code = self.process.poll()
        if code is not None:
            raise PrefectAPIError(f"Prefect's local API stopped with code {code} during the run"
                                  f"{self._tail_clause()}; {USE_A_SERVER}.")

    def output_tail(self, lines: int = 3, limit: int = 400) -> str:
        """The child's last lines of output, on one line."""
        if self._output is None:
            return ""
        self._output.flush()
        self._output.seek(0, os.SEEK_END)
        size = self._output.tell()
        self._output.seek(max(0, size - 8192))
        text = self._output.read().decode("utf-8", errors="replace")
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept)[-limit:]

    def _tail_clause(self) -> str:
        tail = self.output_tail()
        return f" (its last output: {tail})" if tail else " (no output)"

    def stop(self) -> None:
        """Terminate the child, wait, kill it if it lingers. Safe to call twice."""
        process, self.process = self.process, None
        self._ready = False
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _Launcher:
    """A thread parked for the whole life of the process, for starts asked from other threads: the kernel
    sends the parent-death signal when the *thread* that started the child ends, not the process."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, name="relance-prefect-api-launcher", daemon=True).start()

    def _loop(self) -> None:
        while True:
            spawn, answer = self._jobs.get()
            try:
                answer.put(spawn())
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                answer.put(exc)

    def run(self, spawn: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        answer: queue.Queue = queue.Queue()
        self._jobs.put((spawn, answer))
        result = answer.get()
        if isinstance(result, BaseException):
            raise result
        return result


_launcher_instance: _Launcher | None = None
_shared: LocalAPI | None = None
_shared_pid = 0
_shared_lock = threading.Lock()
_early: LocalAPI | None = None  # started by `start_early`, not yet used by a flow run


def _launcher() -> _Launcher:
    global _launcher_instance
    if _launcher_instance is None:
        _launcher_instance = _Launcher()
    return _launcher_instance


def shared(*, settings: bool = True) -> LocalAPI:
    """This process's local API, started on first use (not yet necessarily answering: see `wait_ready`)."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid() or _shared.process is None:
            _shared, _shared_pid = LocalAPI().start(settings=settings), os.getpid()  # after a fork the child starts its own
        return _shared


def start_early() -> None:
    """Start this process's local API now, unless PREFECT_API_URL names a server, so that its start-up
    (seconds: it imports Prefect's server) overlaps the command's own imports and scenario loading.

    Only the environment is read: a PREFECT_API_URL set in a Prefect profile is seen later, by
    `relance.prefect_adapter.flow_api`, which then stops the API started here unused."""
    global _early
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "").lower() in ("0", "false"):
        return
    if current() is not None and current().process is not None:
        return  # already running (and perhaps in use): nothing to start
    try:
        _early = shared(settings=False)  # a command line's process has no settings of its own to pass on
    except PrefectAPIError:
        pass  # said again, in one sentence, when a flow run needs it


def claim_early() -> None:
    """The API `start_early` started is now in use: `drop_early` leaves it alone."""
    global _early
    _early = None


def drop_early() -> None:
    """Stop the API `start_early` started if nothing used it (the flow runs go to a server after all)."""
    global _early
    if _early is not None:
        _early.stop()
        _early = None


def current() -> LocalAPI | None:
    """This process's local API if `shared()` started one (running or not), else None."""
    return _shared if _shared is not None and _shared_pid == os.getpid() else None


# --- the child -------------------------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """SIGTERM when the parent dies; exit now if it already has (it may have died before prctl)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:  # no parent-death signal: watch for being reparented
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:
        sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relance.prefect_api", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True, help="exit when this process dies")
    args = parser.parse_args(argv)
    _die_with(args.parent)
    import uvicorn

    # As Prefect's SubprocessASGIServer runs it; uvicorn exits with 3 when it cannot start (port taken).
    uvicorn.run(SERVER, factory=True, host="127.0.0.1", port=args.port, log_level="error", lifespan="on")


if __name__ == "__main__":
    main()
