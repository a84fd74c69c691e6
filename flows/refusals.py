"""A flow that cannot start for its setup (a setting, a folder it names, the database) says why in one sentence.

A worker runs deployed flows with whatever RELANCE_* it has; a value it cannot use is the operator's to fix,
not a fault in relance: the run ends Failed with the sentence the command line would print, logged once as an
error, without a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.states import Failed

from relance.settings import SettingError
from relance.workspace import SetupError


def refuses_bad_setup(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (a flow's body, under `@flow`), ending Failed with the sentence of a SettingError or SetupError it raises."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SettingError, SetupError) as exc:
            get_run_logger().error("%s", exc)
            return Failed(message=str(exc))

    return run
