"""The one place relance keeps Prefect's server from sending telemetry: the environment of its local API."""

from relance.prefect_api import _server_env


def test_the_local_api_sends_no_telemetry_unless_the_operator_opts_in(monkeypatch):
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    assert _server_env(settings=False)["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    assert _server_env(settings=False)["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"
