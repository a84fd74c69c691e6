"""`relance prefect-server` and `relance worker` (relance/cli/prefect_server.py): the settings they give their
prefect child, what the operator set winning, and the one-line refusals. The commands running for real, UI and
all, are tested by tests/flows/test_prefect_ui.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from relance.cli import app
from relance.cli.prefect_server import server_env, worker_env

PROJECT = Path(__file__).resolve().parents[1]


def _relance(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A relance command in a process of its own, with a Prefect home of its own and no PREFECT_* of the caller."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    clean.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(PROJECT), **env)
    return subprocess.run([sys.executable, "-m", "relance.cli", *args], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=120)


def test_the_server_child_is_told_the_ui_api_at_its_own_host_and_port_and_no_analytics() -> None:
    env = server_env({"PATH": "/bin"}, {}, host="127.0.0.1", port=4301)
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1" and env["PREFECT_SERVER_API_PORT"] == "4301"
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4301/api"
    assert env["PREFECT_UI_URL"] == "http://127.0.0.1:4301"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["PATH"] == "/bin"


def test_what_the_operator_set_for_the_server_wins_from_any_prefect_source() -> None:
    configured = {"PREFECT_SERVER_UI_API_URL": "https://prefect.example/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    env = server_env({}, configured, host="0.0.0.0", port=4200)
    # not put in the child's environment: Prefect reads the operator's own value from where it was set
    assert "PREFECT_SERVER_UI_API_URL" not in env and "PREFECT_SERVER_ANALYTICS_ENABLED" not in env
    assert env["PREFECT_UI_URL"] == f"http://{socket.getfqdn()}:4200"  # a wildcard host: this machine's name


def test_the_worker_polls_every_second_unless_the_operator_chose() -> None:
    assert worker_env({}, {})["PREFECT_WORKER_QUERY_SECONDS"] == "1"
    assert worker_env({}, {})["PREFECT_WORKER_PREFETCH_SECONDS"] == "10"
    chosen = worker_env({"PREFECT_WORKER_QUERY_SECONDS": "5"}, {"PREFECT_WORKER_QUERY_SECONDS": "5"})
    assert chosen["PREFECT_WORKER_QUERY_SECONDS"] == "5"
    from_profile = worker_env({}, {"PREFECT_WORKER_QUERY_SECONDS": "3"})  # `prefect config set`: the child reads it
    assert "PREFECT_WORKER_QUERY_SECONDS" not in from_profile


def test_a_worker_without_prefect_api_url_is_one_sentence_saying_what_to_export(tmp_path: Path) -> None:
    done = _relance(tmp_path, "worker")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: PREFECT_API_URL is not set") and "export PREFECT_API_URL=" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_worker_whose_server_does_not_answer_is_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: nothing answers there
        done = _relance(tmp_path, "worker", PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:{port}/api")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_server_on_a_taken_port_is_one_sentence_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = _relance(tmp_path, "prefect-server", "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: port {port} on 127.0.0.1 is taken")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_without_the_prefect_command_both_say_so_in_one_sentence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))  # an environment with no `prefect`
    for command in (["worker"], ["prefect-server"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: no `prefect` command beside"), result.output
