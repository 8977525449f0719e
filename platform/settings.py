"""One cached `Settings` object, read from the environment (and a `.env` file if present)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import jwt
from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Refused in production (see the validator below).
DEV_JWT_SECRET = "dev-only-signing-key-change-me-in-production-0123456789"  # noqa: S105
DEV_CUSTOMER_ID_KEY = "dev-only-customer-id-key-change-me-in-production-0123456789"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COALITION_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["dev", "test", "production"] = "dev"
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "COALITION_DATABASE_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "COALITION_REDIS_URL")
    )
    data_dir: Path = Path(".coalition")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"

    # JSON map of key id -> HMAC secret; the active id signs, every listed id verifies.
    jwt_keys: dict[str, str] = {"dev-1": DEV_JWT_SECRET}
    jwt_active_kid: str = "dev-1"
    jwt_issuer: str = "coalition"
    jwt_audience: str = "coalition-api"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    invitation_ttl_seconds: int = 7 * 24 * 3600
    # Delay before each webhook retry; together they span more than 24 hours.
    webhook_retry_schedule_seconds: list[int] = [
        30,
        120,
        600,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        24 * 3600,
    ]
    webhook_timeout_seconds: float = 10.0

    # Subscribers: keyed hash of phone numbers, one-time codes, customer tokens, SMS.
    customer_id_key: str = DEV_CUSTOMER_ID_KEY  # changing it orphans every customer
    customer_token_audience: str = "coalition-customer"  # noqa: S105 - an audience name
    customer_token_ttl_seconds: int = 3600
    customer_otp_ttl_seconds: int = 300
    customer_otp_max_attempts: int = 5
    customer_otp_requests_per_window: int = 5
    customer_otp_window_seconds: int = 900
    sms_gateway: Literal["console", "disabled"] | None = None  # None: console, off in production
    # The carrier's identity service: JWKS (JSON) of its public signing keys, issuer, audience.
    carrier_idp_jwks: str | None = None
    carrier_idp_issuer: str | None = None
    carrier_idp_audience: str | None = None

    login_attempts_per_window: int = 10
    login_window_seconds: int = 300

    max_request_body_bytes: int = 1_048_576

    # Outside production only: run the application's clock this many seconds ahead of the
    # wall clock (e.g. 172800: two days later, when today's daily statements have ended).
    # Used by the browser tests; production refuses to start with it.
    clock_offset_seconds: int = Field(default=0, ge=0)

    # POS calls per terminal: a token bucket per terminal in each API process (no Redis).
    pos_rate_limit_per_minute: int = Field(default=120, ge=1)
    pos_rate_limit_burst: int = Field(default=30, ge=1)
    # Online checkout holds: the default and longest time a reserved coupon is held.
    online_hold_ttl_seconds: int = Field(default=900, ge=10)
    online_hold_max_ttl_seconds: int = Field(default=3600, ge=10)
    # Velocity rule: a customer redeeming at this many different partners within the window
    # is flagged for review (never blocked).
    velocity_window_minutes: int = Field(default=30, ge=1)
    velocity_partners: int = Field(default=3, ge=2)

    # A pool that does not churn: SQLAlchemy closes an overflow connection as soon as it is
    # returned, and a new asyncpg connection costs a connect, type introspection and codec
    # setup (milliseconds of CPU each) - under load, on nearly every request.
    db_pool_size: int = 20
    db_max_overflow: int = 0
    job_max_tries: int = 10
    log_json: bool | None = None
    log_level: str = "INFO"

    # Stripe (settlement/stripe_gateway.py). Without a key `coalition dev` runs the simulator and
    # points the API base at it; the webhook secret verifies `Stripe-Signature` headers.
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_max_network_retries: int = 2
    stripe_timeout_seconds: float = 30.0
    stripe_webhook_tolerance_seconds: int = 300

    # Statements: nets whose absolute value is below the minimum payout (minor units, any
    # currency) are carried forward; above the threshold a second, different finance user
    # approves (None: one approval always); whether an organization's own finance staff may
    # approve its statements (else only the carrier's).
    statement_minimum_payout: int = Field(default=1_000, ge=0)
    statement_second_approval_above: int | None = Field(default=10_000_000, ge=0)
    statement_own_finance_may_approve: bool = True

    @field_validator("database_url")
    @classmethod
    def _asyncpg_driver(cls, value: str | None) -> str | None:
        return to_asyncpg_url(value) if value else None

    @model_validator(mode="after")
    def _production_has_real_secrets(self) -> Settings:
        if self.jwt_active_kid not in self.jwt_keys:
            raise ValueError("COALITION_JWT_ACTIVE_KID must name one of COALITION_JWT_KEYS")
        if self.customer_token_audience == self.jwt_audience:
            raise ValueError("the customer token audience must differ from the staff one")
        if self.carrier_idp_jwks is not None:
            if not self.carrier_idp_issuer or not self.carrier_idp_audience:
                raise ValueError("COALITION_CARRIER_IDP_JWKS needs its _ISSUER and _AUDIENCE")
            if self.carrier_idp_issuer == self.jwt_issuer:
                raise ValueError("the carrier identity issuer must differ from ours")
            try:
                jwt.PyJWKSet.from_json(self.carrier_idp_jwks)
            except (jwt.PyJWTError, ValueError) as exc:
                raise ValueError(f"COALITION_CARRIER_IDP_JWKS is not a usable JWKS: {exc}") from exc
        if self.environment == "production":
            if DEV_JWT_SECRET in self.jwt_keys.values():
                raise ValueError("production needs COALITION_JWT_KEYS set to real secrets")
            if not self.database_url or not self.redis_url:
                raise ValueError("production needs DATABASE_URL and REDIS_URL")
            if self.customer_id_key == DEV_CUSTOMER_ID_KEY:
                raise ValueError("production needs COALITION_CUSTOMER_ID_KEY set to a real secret")
            if self.clock_offset_seconds:
                raise ValueError(
                    "COALITION_CLOCK_OFFSET_SECONDS shifts the clock: not in production"
                )
            if self.sms_gateway == "console":
                raise ValueError("the console SMS gateway prints one-time codes: not in production")
        return self

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.environment == "production"


def to_asyncpg_url(url: str) -> str:
    """Accept the usual `postgres://` / `postgresql://` spellings and use the asyncpg driver."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
