"""`relance prefect-server` and `relance worker`: Prefect's server and a process worker, started right on any host
and port. Prefect's own CLI (the one beside this Python) runs as a child with the settings it lacks filled in: the
UI's API address (Prefect derives it from PREFECT_SERVER_API_HOST/PORT, never from `--port`, so on any port but
4200 the UI asks the wrong address) and a worker that polls every second. What the operator set (environment,
Prefect profile, prefect.toml, .env) wins; signals pass through to the child and its exit code is ours."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import typer

from relance.cli.common import _setup_failed, console

WILDCARDS = ("", "0.0.0.0", "::")
# The defaults relance sets for a worker: Prefect's 10 s poll would make a run created by an event wait up to 10 s
# before any worker sees it. The look-ahead stays above the poll plus a run process's start-up (a few seconds), so a
# scheduled tick still starts on time.
WORKER_DEFAULTS = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "10"}


def prefect_server(
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on [PREFECT_SERVER_API_HOST, else 127.0.0.1]."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="Port to listen on [PREFECT_SERVER_API_PORT, else 4200]."),
) -> None:
    """Prefect's server (API and UI) on HOST:PORT, its UI asking the API at that same address."""
    prefect = _prefect_cli()
    configured = _configured(prefect)
    host = host if host is not None else configured.get("PREFECT_SERVER_API_HOST", "127.0.0.1")
    port = port if port is not None else int(configured.get("PREFECT_SERVER_API_PORT", "4200"))
    _refuse_taken(host, port)
    public = f"http://{_url_host(_public_host(host))}:{port}"
    env = server_env(os.environ, configured, host=host, port=port)
    ui, api = (_setting(env, configured, name) for name in ("PREFECT_UI_URL", "PREFECT_SERVER_UI_API_URL"))
    console.print(f"Prefect UI: {ui}  (it calls the API at {api})", soft_wrap=True, highlight=False)
    if host in WILDCARDS and "PREFECT_SERVER_UI_API_URL" not in configured:
        console.print(f"Browsers elsewhere must reach {public}: if they cannot, set PREFECT_UI_API_URL to the API "
                      "address they use (e.g. behind a proxy).", soft_wrap=True, highlight=False)
    console.print(f"In the other terminals: export PREFECT_API_URL={public}/api", soft_wrap=True, highlight=False)
    raise typer.Exit(_run_child([str(prefect), "server", "start", "--host", host, "--port", str(port)], env))


def worker(
    pool: str = typer.Option("relance", "--pool", help="The process work pool to take runs from (created if missing)."),
    name: Optional[str] = typer.Option(None, "--name", help="The worker's name in the UI (default: Prefect's)."),
) -> None:
    """A process worker on POOL of the server PREFECT_API_URL names: it runs the ticks in this folder."""
    prefect = _prefect_cli()
    configured = _configured(prefect)
    api = configured.get("PREFECT_API_URL")
    if not api:
        _refuse("PREFECT_API_URL is not set: a worker needs its server's address; run "
                "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (the line `relance prefect-server` prints) or "
                "`prefect config set PREFECT_API_URL=...`")
    _refuse_unreachable(api)
    env = worker_env(os.environ, configured)
    console.print(f"Worker on pool {pool!r} of {api}: polling every {_setting(env, configured, 'PREFECT_WORKER_QUERY_SECONDS')} s",
                  soft_wrap=True, highlight=False)
    argv = [str(prefect), "worker", "start", "--pool", pool, "--type", "process"]  # --type: the pool is created if missing
    raise typer.Exit(_run_child(argv + (["--name", name] if name else []), env))


def server_env(environ, configured: dict[str, str], *, host: str, port: int) -> dict[str, str]:
    """The server child's environment: `environ` plus the addresses the UI needs, unless the operator set them."""
    base = f"http://{_url_host(_public_host(host))}:{port}"
    env = dict(environ)
    # `prefect server start --port` binds there but leaves these at 127.0.0.1:4200, from which the UI's address comes
    env.update(PREFECT_SERVER_API_HOST=host, PREFECT_SERVER_API_PORT=str(port))
    wanted = {
        "PREFECT_SERVER_UI_API_URL": f"{base}/api",  # what /ui-settings tells the browser: every API call goes there
        "PREFECT_UI_URL": base,  # the links the server writes (automations' notifications)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",  # no question about profiles: the address is printed above instead
    }
    env.update({k: v for k, v in wanted.items() if k not in configured})
    return env


def worker_env(environ, configured: dict[str, str]) -> dict[str, str]:
    """The worker child's environment: `environ` plus relance's polling defaults, unless the operator set them."""
    env = dict(environ)
    env.update({k: v for k, v in WORKER_DEFAULTS.items() if k not in configured})
    env.setdefault("PREFECT_CLI_PROMPT", "false")
    return env


def _setting(env: dict[str, str], configured: dict[str, str], name: str) -> str:
    """A setting's value for the child: the operator's, wherever it was set, else what relance put in `env`."""
    return configured.get(name) or env.get(name, "")


def _prefect_cli() -> Path:
    """The `prefect` command of this Python's environment (the same packages relance runs on)."""
    prefect = Path(sys.executable).with_name("prefect")
    if not prefect.exists():
        _refuse(f"no `prefect` command beside {sys.executable}: install relance with its dependencies in this "
                "environment (pip install -e .)")
    return prefect


def _configured(prefect: Path) -> dict[str, str]:
    """The Prefect settings set from any source (environment, profile, prefect.toml, .env), as Prefect reads them
    here: asking Prefect is the only way to see all its sources."""
    done = subprocess.run([str(prefect), "--no-prompt", "config", "view", "--show-secrets", "-o", "json"],
                          capture_output=True, text=True, env={**os.environ, "PREFECT_CLI_PROMPT": "false"})
    try:
        view = json.loads(done.stdout)
    except ValueError:
        view = None
    if done.returncode != 0 or not isinstance(view, dict):
        said = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
        _refuse(f"Prefect cannot read its settings (`prefect config view`): {said}")
    return {s["name"]: s["value"] for s in view.get("settings", [])}


def _refuse_taken(host: str, port: int) -> None:
    """A port already bound (another server, a second start) is said before Prefect starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)[0]
    except socket.gaierror:
        _refuse(f"--host {host} is not an address of this machine: use an IP address or a name it resolves")
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed server's port is free
        try:
            probe.bind(address)
        except OSError as exc:
            _refuse(f"port {port} on {host} is taken ({exc.strerror}): stop what listens there (another Prefect "
                    "server?) or choose another --port")


def _refuse_unreachable(api: str) -> None:
    """A server that does not answer is said now rather than by the worker's retries."""
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=10) as answer:
            answer.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        _refuse(f"no Prefect server answers at PREFECT_API_URL={api} ({reason}): start it (`relance prefect-server`) "
                "or fix the address")


def _run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run `argv` to its end in a process group of its own; SIGINT, SIGTERM and SIGHUP sent to relance go to that
    group once (a terminal's Ctrl-C reaches relance alone, not the child twice). The child's exit code, or 128 + the
    signal that ended it, as a shell says."""
    child = subprocess.Popen(argv, env=env, process_group=0)

    def forward(signum, _frame) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass  # it ended meanwhile

    kinds = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {kind: signal.signal(kind, forward) for kind in kinds}
    try:
        code = child.wait()
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)
    return 128 - code if code < 0 else code


def _public_host(host: str) -> str:
    """The name browsers and workers use for a server listening on `host`: this machine's name for a wildcard."""
    return socket.getfqdn() if host in WILDCARDS else host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _refuse(message: str) -> None:
    """The setup is wrong: one sentence, exit 2 (as every relance command says it)."""
    _setup_failed(message)
