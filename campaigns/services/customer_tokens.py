"""Who a customer's bearer token names: the subscriber's identity and the tokens that carry it.

- **Identity.** A subscriber's stable external id is `HMAC-SHA256(COALITION_CUSTOMER_ID_KEY,
  E.164 number)` (hex). The number itself is never stored or logged: only the hash and a
  masked hint (`*******5678`). A subscriber the carrier's identity service names by `sub` alone
  (no phone number) is hashed as `idp:["<issuer>", "<sub>"]`, which can never equal a number's
  input (those start with `+`).
- **Customer tokens** are HS256 JWTs signed with the staff key set (same `kid` rotation) but with
  their own audience (`COALITION_CUSTOMER_TOKEN_AUDIENCE`) and `kind: "customer"`, so a customer
  token is never a staff token and the other way round.
- **Carrier identity tokens** (RS256 / ES256, keys from `COALITION_CARRIER_IDP_JWKS`) let the
  carrier's own app call the API for a subscriber; their `tier`, `tags` and `on_network` claims
  update the customer record (`resolve_customer_token`).

The customer principal belongs to no organization: its `org_id` is the nil UUID, which matches
no organization, and its `org_kind` is `"customer"`, so it is neither carrier staff nor a
tenant of anybody (`may_access` is false for every row; `role_guard` refuses it by kind).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

import jwt
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Customer
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.errors import InvalidToken, TokenExpired, ValidationFailed
from coalition.platform.jobs import commit
from coalition.platform.security import (
    TOKEN_LEEWAY_SECONDS,
    sign_token,
    unverified_header,
    verify_token,
)
from coalition.platform.settings import DEV_CUSTOMER_ID_KEY, Settings
from coalition.platform.sms import mask_phone, normalize_phone

# Only these are accepted from the carrier's identity service: never `none`, never HMAC (which
# would let anybody holding the public key sign).
CARRIER_TOKEN_ALGORITHMS = ("RS256", "ES256")
# A customer belongs to no organization: the nil UUID matches none.
CUSTOMER_ORG_ID = uuid.UUID(int=0)
CUSTOMER_ORG_KIND = "customer"
MAX_TAGS = 50


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerConfig:
    """The customer settings, read in one place (`customer_config`)."""

    id_key: str
    token_audience: str
    token_ttl_seconds: int
    otp_ttl_seconds: int
    otp_max_attempts: int
    otp_requests_per_window: int
    otp_window_seconds: int
    idp_jwks: str | None
    idp_issuer: str | None
    idp_audience: str | None
    production: bool

    @property
    def hash_key(self) -> str:
        """The key of external ids and stored codes; the dev key is refused in production (only
        where it is used, so staff sign-in does not depend on it)."""
        if self.production and self.id_key == DEV_CUSTOMER_ID_KEY:
            raise RuntimeError("production needs COALITION_CUSTOMER_ID_KEY set to a real secret")
        return self.id_key


def customer_config(settings: Settings) -> CustomerConfig:
    """The customer settings (their consistency is checked when `Settings` loads)."""
    return CustomerConfig(
        id_key=settings.customer_id_key,
        token_audience=settings.customer_token_audience,
        token_ttl_seconds=settings.customer_token_ttl_seconds,
        otp_ttl_seconds=settings.customer_otp_ttl_seconds,
        otp_max_attempts=settings.customer_otp_max_attempts,
        otp_requests_per_window=settings.customer_otp_requests_per_window,
        otp_window_seconds=settings.customer_otp_window_seconds,
        idp_jwks=settings.carrier_idp_jwks,
        idp_issuer=settings.carrier_idp_issuer,
        idp_audience=settings.carrier_idp_audience,
        production=settings.environment == "production",
    )


# --- pure rules: identity, tokens --------------------------------------------------------------


def external_id_hash(key: str, identity: str) -> str:
    """The stable external id of a subscriber: HMAC-SHA256 of its E.164 number (hex)."""
    return hmac.new(key.encode(), identity.encode(), hashlib.sha256).hexdigest()


def idp_subject_identity(issuer: str, subject: str) -> str:
    """What is hashed for a subscriber known only by the identity service's `sub`."""
    return "idp:" + json.dumps([issuer, subject], ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class CustomerClaims:
    customer_id: uuid.UUID
    token_id: str
    expires_at: datetime


def issue_customer_token(
    settings: Settings, *, customer_id: uuid.UUID, now: datetime
) -> tuple[str, datetime]:
    config = customer_config(settings)
    expires_at = now + timedelta(seconds=config.token_ttl_seconds)
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": config.token_audience,
        "sub": str(customer_id),
        "kind": "customer",
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return sign_token(settings, claims), expires_at


def decode_customer_token(settings: Settings, token: str) -> CustomerClaims:
    claims = verify_token(settings, token, audience=customer_config(settings).token_audience)
    if claims.get("kind") != "customer":
        raise InvalidToken("Not a customer token")
    try:
        return CustomerClaims(
            customer_id=uuid.UUID(str(claims["sub"])),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidToken("Token claims are incomplete") from exc


@dataclass(frozen=True, slots=True)
class CarrierClaims:
    """A subscriber as the carrier's identity service vouches for them (None: not stated)."""

    external_id_hash: str
    phone_hint: str | None
    tier: int | None
    tags: list[str] | None
    on_network: bool | None


@lru_cache(maxsize=4)
def carrier_keys(jwks_json: str) -> dict[str, jwt.PyJWK]:
    """The carrier identity service's public signing keys by `kid` (a JWKS document)."""
    try:
        key_set = jwt.PyJWKSet.from_json(jwks_json)
    except (jwt.PyJWTError, ValueError) as exc:
        raise RuntimeError(f"COALITION_CARRIER_IDP_JWKS is not a usable JWKS: {exc}") from exc
    keys: dict[str, jwt.PyJWK] = {}
    for key in key_set.keys:
        if key.key_id and key.public_key_use in (None, "sig"):
            keys[key.key_id] = key
    return keys


def _claim_tier(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
        raise InvalidToken("The tier claim must be a whole number from 1 to 7")
    return value


def _claim_tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_TAGS
        or not all(
            isinstance(t, str) and 0 < len(t) <= 64 and not any(c.isspace() or c == "," for c in t)
            for t in value
        )
    ):
        raise InvalidToken("The tags claim must be a list of short tags")
    return list(dict.fromkeys(value))


def _claim_on_network(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidToken("The on_network claim must be true or false")


def verify_carrier_token(settings: Settings, token: str) -> CarrierClaims:
    """Verify a token of the carrier's identity service and read the subscriber from it."""
    config = customer_config(settings)
    if not (config.idp_jwks and config.idp_issuer and config.idp_audience):
        raise InvalidToken("Tokens of the carrier's identity service are not accepted here")
    header = unverified_header(token)
    algorithm = header.get("alg")
    if algorithm not in CARRIER_TOKEN_ALGORITHMS:
        raise InvalidToken("Token algorithm not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("The token names no signing key (kid)")
    key = carrier_keys(config.idp_jwks).get(kid)
    if key is None:
        raise InvalidToken("Unknown signing key")
    if key.algorithm_name != algorithm:
        raise InvalidToken("The token's algorithm does not match its signing key")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[str(algorithm)],
            audience=config.idp_audience,
            issuer=config.idp_issuer,
            options={"require": ["exp", "iss", "aud"]},
            leeway=TOKEN_LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired() from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc

    phone = claims.get("phone_number")
    subject = claims.get("sub")
    # OIDC: a number the identity service says it has not verified does not identify anybody.
    if isinstance(phone, str) and phone and claims.get("phone_number_verified") is not False:
        try:
            e164 = normalize_phone(phone)
        except ValidationFailed as exc:
            raise InvalidToken("The phone_number claim is not a mobile number") from exc
        identity, hint = e164, mask_phone(e164)
    elif isinstance(subject, str) and subject:
        identity, hint = idp_subject_identity(config.idp_issuer, subject), None
    else:
        raise InvalidToken("The token names no subscriber (phone_number or sub)")
    return CarrierClaims(
        external_id_hash=external_id_hash(config.hash_key, identity),
        phone_hint=hint,
        tier=_claim_tier(claims.get("tier")),
        tags=_claim_tags(claims.get("tags")),
        on_network=_claim_on_network(claims.get("on_network")),
    )


def token_kind(settings: Settings, token: str) -> Literal["customer", "carrier"] | None:
    """Which customer path a bearer token claims to be for (unverified: only routes it).

    `customer`: our audience for customers; `carrier`: issued by the carrier's identity
    service; None: anything else (staff tokens, keys, garbage) for the other resolvers.
    """
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    config = customer_config(settings)
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if isinstance(audiences, list) and config.token_audience in audiences:
        return "customer"
    if config.idp_issuer and claims.get("iss") == config.idp_issuer:
        return "carrier"
    return None


class VerifiedCustomerTokens:
    """Customer tokens this process verified, by their exact text: a customer's app sends the
    same token with every request, and checking its signature again each time was a tenth of
    a claim's CPU. A hit is still checked for expiry; the signature and claims of a given text
    with the same keys cannot change (the keys are fixed for the life of the process). Bounded:
    the oldest entries go first."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._claims: dict[str, CustomerClaims] = {}

    def __contains__(self, token: object) -> bool:
        return token in self._claims

    def claims(self, settings: Settings, token: str) -> CustomerClaims:
        cached = self._claims.get(token)
        if cached is not None:
            if cached.expires_at.timestamp() + TOKEN_LEEWAY_SECONDS < utcnow().timestamp():
                del self._claims[token]
                raise TokenExpired()
            return cached
        claims = decode_customer_token(settings, token)
        if len(self._claims) >= self.size:
            del self._claims[next(iter(self._claims))]
        self._claims[token] = claims
        return claims


_verified = VerifiedCustomerTokens()


def customer_principal_without_lookup(settings: Settings, token: str) -> Principal | None:
    """The principal of one of our own valid customer tokens, without any I/O; None for every
    other credential (carrier identity tokens, staff tokens, keys, tokens that do not verify),
    which `resolve_customer_token` and the staff resolvers then look at. `TokenExpired` for a
    token verified earlier that has expired since."""
    if token not in _verified:
        try:
            claims = _verified.claims(settings, token)
        except (InvalidToken, TokenExpired):
            # Not one of ours, or one that does not verify: the full resolver decides (and
            # words the error).
            return None
        return customer_principal(claims.customer_id)
    return customer_principal(_verified.claims(settings, token).customer_id)


def customer_principal(customer_id: uuid.UUID) -> Principal:
    return Principal(
        kind="customer",
        org_id=CUSTOMER_ORG_ID,
        org_kind=CUSTOMER_ORG_KIND,
        subject_id=customer_id,
    )


# --- the subscriber's record -------------------------------------------------------------------


async def find_or_create_customer(
    session: AsyncSession,
    external: str,
    *,
    phone_hint: str | None,
    tier: int,
    tags: list[str],
    on_network: bool,
) -> Customer:
    """The customer with this external id; created with the given values if there is none."""
    lookup = select(Customer).where(col(Customer.external_id_hash) == external)
    customer: Customer | None = (await session.execute(lookup)).scalar_one_or_none()
    if customer is None:
        now = utcnow()
        await session.execute(
            insert(Customer)
            .values(
                id=uuid.uuid4(),
                external_id_hash=external,
                phone_hint=phone_hint,
                tier=tier,
                tags=tags,
                on_network=on_network,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[col(Customer.external_id_hash)])
        )
        created: Customer = (await session.execute(lookup)).scalar_one()
        return created
    if customer.phone_hint is None and phone_hint is not None:
        customer.phone_hint = phone_hint
    return customer


# --- tokens into principals --------------------------------------------------------------------


async def resolve_customer_token(
    session: AsyncSession, settings: Settings, token: str
) -> Principal | None:
    """A customer principal for a customer token or a carrier identity token; None when the
    token is neither (so the staff resolvers can try it); `InvalidToken` / `TokenExpired` for
    one of ours that does not verify."""
    if token in _verified:
        return customer_principal(_verified.claims(settings, token).customer_id)
    kind = token_kind(settings, token)
    if kind is None:
        return None
    if kind == "customer":
        # Our own signature vouches for the customer (customers are never deleted), so the
        # hot paths (claims, the wallet) need no lookup here.
        return customer_principal(_verified.claims(settings, token).customer_id)
    carrier = verify_carrier_token(settings, token)
    customer = await _sync_carrier_subscriber(session, carrier)
    return customer_principal(customer.id)


async def _sync_carrier_subscriber(session: AsyncSession, claims: CarrierClaims) -> Customer:
    """Find or create the subscriber and take what the carrier states; write only on change."""
    customer = await find_or_create_customer(
        session,
        claims.external_id_hash,
        phone_hint=claims.phone_hint,
        tier=claims.tier or 1,
        tags=claims.tags or [],
        on_network=True if claims.on_network is None else claims.on_network,
    )
    changes: dict[str, Any] = {}
    if claims.tier is not None and claims.tier != customer.tier:
        changes["tier"] = claims.tier
    if claims.tags is not None and claims.tags != list(customer.tags):
        changes["tags"] = claims.tags
    if claims.on_network is not None and claims.on_network != customer.on_network:
        changes["on_network"] = claims.on_network
    if claims.phone_hint is not None and claims.phone_hint != customer.phone_hint:
        changes["phone_hint"] = claims.phone_hint
    if changes:
        changes["updated_at"] = utcnow()
        await session.execute(
            update(Customer).where(col(Customer.id) == customer.id).values(**changes)
        )
    await commit(session)
    return customer
