"""Settings from the environment (`RELANCE_*`) and `.env`; one object, read once per command."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError


class SettingError(ValueError):
    """A setting, or the service it points to, cannot work: the message names the setting and says what to do."""


DEFAULT_SECRET_KEY = "change-me"
SECRET_KEY_MIN = 32  # characters; what `secrets.token_urlsafe(32)` gives is 43
API_TOKEN_MIN = 16
HOW_TO_MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
MACHINE_CLICK_SECONDS = 10  # default of RELANCE_MACHINE_CLICK_SECONDS: scanners click within seconds of delivery


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
    ses_queue_url: str | None = Field(None, description=(
        "The SQS queue SES events arrive in (infra/ses-events.cfn.yaml): the `ses-events` deployment drains it every minute."))
    ses_dead_letter_url: str | None = Field(None, description="Where the `ses-events` deployment moves messages it cannot use.")
    secret_key: str = Field(DEFAULT_SECRET_KEY, description="Signs tracking and unsubscribe links (32+ characters).")
    secret_keys_old: str = Field(
        "", description="Keys that signed links before a rotation (comma-separated): their links still work, new ones use RELANCE_SECRET_KEY."
    )
    public_url: str = Field("http://localhost:8000", description="Base URL of tracking and unsubscribe links.")
    api_token: str | None = None
    from_: str = Field("Relance <marketing@example.com>", alias="RELANCE_FROM")
    message_id_domain: str | None = Field(None, description="Domain of the Message-ID of emails sent by file or SMTP (default: the sender's).")
    reply_to: str | None = None
    postal_address: str = "Relance SAS, 10 rue de la Paix, 75002 Paris, France"
    scenarios_dir: Path = Path("scenarios")
    templates_dir: Path = Path("templates/emails")
    batch_size: int = Field(500, gt=0, description="Enrollments claimed per batch in a tick.")
    machine_click_seconds: float = Field(
        MACHINE_CLICK_SECONDS, ge=0, description="A click this many seconds or less after its email left is a scanner's (0: no such rule)."
    )
    webhook_allow: str = Field(
        "", description="Hosts and networks inside (names, addresses, CIDRs, comma-separated) webhooks may reach; none by default."
    )
    require_basis: Literal["marketing", "never"] = Field(
        "marketing", description="marketing: a marketing email to a lead with no lawful basis (consent or legitimate "
        "interest) is not sent (skipped, `no lawful basis: ...`); never: no such check (relance.consent)."
    )
    prefect_startup_timeout: float = Field(
        180, gt=0, description="Seconds to wait for Prefect's local API to start (when PREFECT_API_URL is not set)."
    )

    @property
    def verifying_keys(self) -> tuple[str, ...]:
        """The keys a link's signature is checked against: the current one first, then those it replaced."""
        return (self.secret_key, *(key.strip() for key in self.secret_keys_old.split(",") if key.strip()))

    @field_validator("webhook_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        from relance.webhooks import allowed

        allowed(value)  # ValueError naming the entry that is neither a host nor a network
        return value


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once; SettingError (one sentence per bad setting) when one cannot be used."""
    return read_settings()


def read_settings() -> Settings:
    """The settings as the environment has them now (a flow run reads them afresh); SettingError as `get_settings`."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingError("; ".join(_said(error) for error in exc.errors())) from None
    except SettingsError as exc:
        raise SettingError(f"the RELANCE_* settings cannot be read: {exc}") from None


def require_signing_keys(settings: Settings) -> None:
    """SettingError unless the keys that sign links are fit to: anyone who knows a key forges clicks (an open
    redirect under the sender's domain) and unsubscribes any lead. Checked where links are signed or verified
    for real (`relance serve`, ticks, the housekeeping flows), not where relance is used as a library."""
    problems = [_weak_key("RELANCE_SECRET_KEY", settings.secret_key)]
    problems += [_weak_key("RELANCE_SECRET_KEYS_OLD", key, old=True) for key in settings.verifying_keys[1:]]
    problems = [p for p in problems if p]
    if problems:
        raise SettingError("; ".join(problems))


def require_api_token(settings: Settings) -> None:
    """SettingError when RELANCE_API_TOKEN is set but guessable or padded (unset: the API takes no events)."""
    token = settings.api_token
    if token is not None and (len(token) < API_TOKEN_MIN or not token.isascii() or any(c.isspace() for c in token)):
        raise SettingError(f"setting RELANCE_API_TOKEN cannot be used: a bearer token must be at least {API_TOKEN_MIN} "
                           f"ASCII characters with no spaces (a space pasted around it is not part of the token); "
                           f"make one with {HOW_TO_MAKE_A_KEY}, in the environment or in .env")


def _weak_key(variable: str, key: str, *, old: bool = False) -> str | None:
    """Why this signing key must not be used, or None."""
    if key == DEFAULT_SECRET_KEY:
        why = f"it is the default {DEFAULT_SECRET_KEY!r}, which anyone can read in relance's source"
    elif len(key) < SECRET_KEY_MIN:
        why = f"a key of {len(key)} characters is guessable; it must have at least {SECRET_KEY_MIN}"
    elif len(set(key)) < 8:
        why = f"a key of {len(set(key))} different characters is guessable"
    else:
        return None
    fix = "remove it from the list (links it signed stop working)" if old else f"set it to a random value, e.g. {HOW_TO_MAKE_A_KEY}"
    return (f"setting {variable} cannot sign links: {why}, and with it anyone can forge click and unsubscribe links; "
            f"{fix}, in the environment or in .env")


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
