"""relance: YAML scenarios run as Prefect flows; the engine never needs a Prefect server."""

import os as _os

# flows/, tasks/ and bench/ are installed as relance.flows, relance.tasks and relance.bench (pyproject.toml). Run in
# place from a checkout (PYTHONPATH, a Prefect worker in the project folder), they are found beside this folder.
_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_CHECKOUT, "pyproject.toml")) and all(
        _os.path.isfile(_os.path.join(_CHECKOUT, name, "__init__.py")) for name in ("flows", "tasks", "bench")):
    __path__.append(_CHECKOUT)
