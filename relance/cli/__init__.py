"""`relance ...`: the command line (typer + rich). Commands stay thin: parse, call, print.

Each command group lives in its own module; this one puts them together, in the order `relance --help` lists them.
What they share (settings, times, the store, the workspace, errors) is in `common`."""

from __future__ import annotations

import typer

from relance.cli import deploy, figures, leads, outbox, prefect_server, runs, sales, scenarios, suppress
from relance.cli.common import _Relance

app = typer.Typer(cls=_Relance, add_completion=False, no_args_is_help=True,
                  help="relance: B2B lead nurturing, scored and handed to sales.")

for name, command in (
    (None, scenarios.validate), (None, scenarios.schema), ("import", leads.import_), (None, leads.event),
    (None, runs.tick), (None, figures.report), ("ses-events", runs.ses_events), (None, scenarios.simulate),
    (None, figures.bench), (None, scenarios.preview), (None, runs.serve), (None, runs.demo),
    (None, deploy.deploy), ("prefect-server", prefect_server.prefect_server), (None, prefect_server.worker),
):
    app.command(name)(command)

for name, group in (("lead", leads.lead_app), ("flow", runs.flow_app), ("suppress", suppress.suppress_app),
                    ("sales", sales.sales_app), ("cost", sales.cost_app), ("outbox", outbox.outbox_app)):
    app.add_typer(group, name=name)
