"""Settings from the environment (`RELANCE_*`) and `.env`; one object, read once per command."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError


class SettingError(ValueError):
    """A setting, or the service it points to, cannot work: the message names the setting and says what to do."""


class Settings(BaseSettings):
    """Every knob an operator can turn, with defaults that run anywhere."""

    model_config = SettingsConfigDict(env_prefix="RELANCE_", env_file=".env", extra="ignore")

    database_url: str = Field("sqlite:///relance.db", description="SQLAlchemy URL; postgresql+psycopg://... in production.")
    transport: Literal["file", "smtp", "ses", "null"] = Field("file", description="How emails leave.")
    outbox_dir: Path = Field(Path("outbox"), description="Where the file transport writes .eml files.")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_timeout: float = Field(30.0, gt=0, description="Seconds an SMTP server may take to accept a connection or answer a step.")
    ses_endpoint_url: str | None = Field(None, description="Override the SES endpoint (tests use a local moto server).")
    ses_region: str = "eu-west-1"
    ses_configuration_set: str | None = None
    ses_max_send_rate: float | None = Field(None, gt=0, description="Emails per second SES allows this account (its quota).")
    ses_timeout: float = Field(10.0, gt=0, description="Seconds SES may take to accept a connection, and to answer a sent call.")
    secret_key: str = Field("change-me", description="Signs tracking and unsubscribe links.")
    public_url: str = Field("http://localhost:8000", description="Base URL of tracking and unsubscribe links.")
    api_token: str | None = None
    from_: str = Field("Relance <marketing@example.com>", alias="RELANCE_FROM")
    message_id_domain: str | None = Field(None, description="Domain of the Message-ID of emails sent by file or SMTP (default: the sender's).")
    reply_to: str | None = None
    postal_address: str = "Relance SAS, 10 rue de la Paix, 75002 Paris, France"
    scenarios_dir: Path = Path("scenarios")
    templates_dir: Path = Path("templates/emails")
    batch_size: int = Field(500, gt=0, description="Enrollments claimed per batch in a tick.")
    webhook_allow: str = Field(
        "", description="Hosts and networks inside (names, addresses, CIDRs, comma-separated) webhooks may reach; none by default."
    )
    prefect_startup_timeout: float = Field(
        180, gt=0, description="Seconds to wait for Prefect's local API to start (when PREFECT_API_URL is not set)."
    )

    @field_validator("webhook_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        from relance.webhooks import allowed

        allowed(value)  # ValueError naming the entry that is neither a host nor a network
        return value


@lru_cache
def get_settings() -> Settings:
    """The settings of this process; SettingError (one sentence per bad setting) when one cannot be used."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingError("; ".join(_said(error) for error in exc.errors())) from None
    except SettingsError as exc:
        raise SettingError(f"the RELANCE_* settings cannot be read: {exc}") from None


_SECRET = ("secret", "token", "password", "key")


def _said(error) -> str:
    """One pydantic error on a setting, as an operator fixes it: the variable, its value, what it must be, the default."""
    name = str(error["loc"][0]) if error["loc"] else "?"
    field = next((f for n, f in Settings.model_fields.items() if name in (n, f.alias)), None)
    variable = name if name.startswith("RELANCE_") else f"RELANCE_{name.upper()}"
    shown = "" if any(word in name.lower() for word in _SECRET) else f"={str(error.get('input'))[:80]!r}"
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        what = "expected one of " + str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
    elif kind == "int_parsing":
        what = "not a whole number"
    elif kind == "float_parsing":
        what = "not a number"
    elif kind in ("greater_than", "greater_than_equal"):
        bound = ctx.get("gt", ctx.get("ge"))
        what = f"it must be {'more than' if kind == 'greater_than' else 'at least'} {f'{bound:g}' if isinstance(bound, float) else bound}"
    elif kind == "value_error":
        what = str(ctx.get("error", error["msg"]))
    else:
        what = error["msg"][0].lower() + error["msg"][1:]
    default = f" (unset, it is {field.default})" if field is not None and field.default not in (None, "") else ""
    return f"setting {variable}{shown} cannot be used: {what}; fix it in the environment or in .env{default}"
