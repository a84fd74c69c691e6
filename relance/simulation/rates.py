"""How synthetic leads react to the emails a simulated scenario sends."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class EngagementRates(BaseModel):
    """Per sent email: how often, and how soon, each reaction happens (B2B defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_rate: float = Field(0.35, ge=0.0, le=1.0, description="Share of sent emails opened.")
    click_rate: float = Field(0.08, ge=0.0, le=1.0, description="Share of sent emails clicked (a click needs an open).")
    download_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share of sent emails followed by a download of an asset the scenario looks for.")
    visit_rate: float = Field(0.10, ge=0.0, le=1.0, description="Share of sent emails followed by a visit of a page the scenario looks for.")
    unsubscribe_rate: float = Field(0.005, ge=0.0, le=1.0, description="Share of sent emails followed by an unsubscribe.")
    event_rate: float = Field(0.02, ge=0.0, le=1.0, description="Share of sent emails followed by another event the scenario waits for (demo_requested...).")
    open_delay_hours: float = Field(6.0, gt=0.0, description="Mean delay between sending and opening (exponential).")
    click_delay_hours: float = Field(0.1, gt=0.0, description="Mean delay between opening and clicking.")
    action_delay_hours: float = Field(36.0, gt=0.0, description="Mean delay between sending and a download, visit, unsubscribe or other event.")

    @model_validator(mode="after")
    def _clicks_need_opens(self) -> "EngagementRates":
        if self.click_rate > self.open_rate:
            raise ValueError(
                f"click rate {self.click_rate} is above the open rate {self.open_rate}: "
                "a click needs an open, so lower click or raise open"
            )
        return self

    @property
    def click_given_open(self) -> float:
        """The chance that an opened email is also clicked."""
        return self.click_rate / self.open_rate if self.open_rate else 0.0


# CLI spelling -> field name; full field names are accepted too.
SHORT_NAMES = {
    "open": "open_rate",
    "click": "click_rate",
    "download": "download_rate",
    "visit": "visit_rate",
    "unsubscribe": "unsubscribe_rate",
    "event": "event_rate",
    "open_delay": "open_delay_hours",
    "click_delay": "click_delay_hours",
    "action_delay": "action_delay_hours",
}


def parse_rates(text: str | None, *, base: EngagementRates | None = None) -> EngagementRates:
    """`open=0.4,click=0.1` -> EngagementRates (unnamed rates keep their defaults)."""
    base = base or EngagementRates()
    values: dict[str, float] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = name.strip().lower()
        if not sep:
            raise ValueError(f"rates: {part!r} should be NAME=VALUE, like open=0.4")
        field = SHORT_NAMES.get(name, name if name in EngagementRates.model_fields else None)
        if field is None:
            close = difflib.get_close_matches(name, list(SHORT_NAMES), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"rates: unknown rate {name!r}{hint}; expected one of {', '.join(SHORT_NAMES)}")
        try:
            values[field] = float(raw.strip().rstrip("%")) / (100 if raw.strip().endswith("%") else 1)
        except ValueError:
            raise ValueError(f"rates: {name}={raw.strip()} is not a number; write e.g. {name}=0.4 or {name}=40%") from None
    try:
        return EngagementRates.model_validate({**base.model_dump(), **values})
    except ValidationError as exc:
        problems = "; ".join(
            (f"{_short(err['loc'][0])}: " if err["loc"] else "") + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise ValueError(f"rates: {problems}") from None


def _short(field: object) -> str:
    return next((short for short, full in SHORT_NAMES.items() if full == field), str(field))
