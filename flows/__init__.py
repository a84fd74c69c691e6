"""Prefect flows: thin sequences of the tasks in tasks/, run by a worker or by `relance` itself."""

from relance.flows.logs import said_without_traceback

said_without_traceback()  # in every process that runs a flow: a worker's as well as relance's own
