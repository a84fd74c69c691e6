"""The one place relance reaches Prefect: running the tick flow from the CLI and the demo.

Imports are lazy so that `relance` imports, runs and tests without Prefect loaded.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def run_tick(scenario: str, *, now: str | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """One Prefect flow run of `flows/tick.py:tick` for one scenario; returns its counts."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    tick = importlib.import_module("flows.tick").tick
    return tick(scenario=scenario, now=now, batch_size=batch_size)


def run_flow(module: str, name: str, **parameters: Any) -> Any:
    """One flow run of `flows/<module>.py:<name>` (housekeeping flows)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return getattr(importlib.import_module(module), name)(**parameters)
