"""A test as the owner of a unit of work: one transaction around one service call (docs/architecture.md)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

T = TypeVar("T")


def committed(engine: Engine, service: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `service(session, *args, **kwargs)` in a session of its own and commit what it did."""
    with Session(engine) as session:
        result = service(session, *args, **kwargs)
        session.commit()
    return result
