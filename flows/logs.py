"""What an operator reads in a flow run's log: relance's own errors as their sentence, any other with its traceback."""

from __future__ import annotations

import logging

from relance.delivery import RetryableDelivery
from relance.prefect_api import PrefectAPIError
from relance.settings import SettingError
from relance.tick import TickError
from relance.workspace import SetupError

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")  # where Prefect logs a failed run, traceback attached
SAID = (SettingError, SetupError, TickError, RetryableDelivery, PrefectAPIError)  # errors whose message says it all


def said_without_traceback() -> None:
    """Prefect logs a traceback with every failed task or flow run. relance's own errors (a setting, a setup, a
    delivery to retry, what a tick left) say in their message what failed and what to do: an operator reading the
    flow log gets that sentence, not a stack. Any other error keeps its traceback: that one is a bug to report."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _drop_said_traceback not in logger.filters:
            logger.addFilter(_drop_said_traceback)


def _drop_said_traceback(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if error is not None and isinstance(error, SAID):
        record.exc_info, record.exc_text = None, None
    return True
