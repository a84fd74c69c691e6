"""Settings from the environment (`RELANCE_*`) and `.env`; one object, read once per command."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    batch_size: int = Field(500, description="Enrollments claimed per batch in a tick.")
    prefect_startup_timeout: float = Field(
        180, gt=0, description="Seconds to wait for Prefect's local API to start (when PREFECT_API_URL is not set)."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
