"""`relance serve` and `demo`: the HTTP API, and the main job run end to end on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from relance.cli.common import _library, _prefect, _signing_settings, console


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
) -> None:
    """The HTTP API: tracking, one-click unsubscribe, event intake (OpenAPI docs at /docs)."""
    import uvicorn

    from relance.api.app import create_app
    from relance.plans import open_store

    library, settings = _library(), _signing_settings(api=True)  # at start-up: a missing folder is refused now, not at the first request
    api = create_app(settings, engine=open_store(settings), library=library)
    uvicorn.run(api, host=host, port=port, proxy_headers=True)


def demo(directory: Path = typer.Option(Path("demo-run"), "--dir", help="Where to put the demo database and outbox.")) -> None:
    """The main job on embedded defaults: leads, 30 days of engagement, real Prefect ticks, an outbox."""
    from relance.demo.run import run_demo

    _library()  # the demo runs the project's scenarios: refused before it clears DIR when they are missing
    with _prefect():
        run_demo(directory, console=console)
