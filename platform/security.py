"""Passwords (argon2id), signed access tokens (JWT) and opaque secrets (refresh tokens, keys)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from coalition.platform.db import utcnow
from coalition.platform.errors import InvalidToken, TokenExpired
from coalition.platform.settings import Settings

# Only these algorithms are ever accepted; `none` and asymmetric/symmetric confusion are refused.
ACCESS_TOKEN_ALGORITHMS = ["HS256"]
TOKEN_LEEWAY_SECONDS = 5  # clock skew allowed on `exp`, `nbf` and `iat`

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so both paths cost the same.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_secret(prefix: str, nbytes: int = 32) -> str:
    """An opaque bearer secret such as `crt_...`; store only `secret_digest` of it."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def secret_digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret: enough for random tokens (passwords use argon2)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """`<prefix>_<key_id>_<secret>`, shown once: `key_id` finds it, `digest` proves it."""

    full: str
    key_id: str
    digest: str


def issue_key(prefix: str) -> IssuedKey:
    key_id = secrets.token_hex(8)
    full = f"{prefix}_{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(full=full, key_id=key_id, digest=secret_digest(full))


def key_id_of(credential: str, prefix: str) -> str | None:
    """The key id of a well-formed `<prefix>_<key_id>_<secret>` credential, else None."""
    head, _, rest = credential.partition("_")
    key_id, _, secret = rest.partition("_")
    if head != prefix or len(key_id) != 16 or len(secret) < 20:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def sign_token(settings: Settings, claims: dict[str, Any]) -> str:
    """An HS256 JWT signed with the active key of the key set, its `kid` in the header."""
    kid = settings.jwt_active_kid
    return jwt.encode(claims, settings.jwt_keys[kid], algorithm="HS256", headers={"kid": kid})


def unverified_header(token: str) -> dict[str, Any]:
    """A JWT's header, unverified (to pick the algorithm and key); `InvalidToken` if malformed."""
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken("Malformed token") from exc


def verify_token(settings: Settings, token: str, *, audience: str) -> dict[str, Any]:
    """The claims of a token signed by `sign_token` for `audience` (any key of the key set, so
    rotation keeps older tokens valid); `InvalidToken` or `TokenExpired` otherwise."""
    header = unverified_header(token)
    if header.get("alg") not in ACCESS_TOKEN_ALGORITHMS:
        raise InvalidToken("Token algorithm not allowed")
    key = settings.jwt_keys.get(str(header.get("kid")))
    if key is None:
        raise InvalidToken("Unknown signing key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=ACCESS_TOKEN_ALGORITHMS,
            audience=audience,
            issuer=settings.jwt_issuer,
            # Times are checked below against the application's clock, which signed them.
            options={
                "require": ["exp", "iat", "iss", "aud", "sub", "jti"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    _check_times(claims)
    return claims


def _check_times(claims: dict[str, Any]) -> None:
    """`exp`, `iat` and `nbf` against `utcnow()` (the clock that issued them, shifted in tests
    by `COALITION_CLOCK_OFFSET_SECONDS`), allowing `TOKEN_LEEWAY_SECONDS` of skew."""
    times: dict[str, float] = {}
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidToken(f"The `{name}` claim is not a time")
        times[name] = float(value)
    now = utcnow().timestamp()
    if times["exp"] <= now - TOKEN_LEEWAY_SECONDS:
        raise TokenExpired()
    if max(times["iat"], times.get("nbf", times["iat"])) > now + TOKEN_LEEWAY_SECONDS:
        raise InvalidToken("The token is not yet valid")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    org_id: uuid.UUID
    role: str
    token_id: str
    expires_at: datetime


def issue_access_token(
    settings: Settings, *, user_id: uuid.UUID, org_id: uuid.UUID, role: str, now: datetime
) -> tuple[str, datetime]:
    expires_at = now + timedelta(seconds=settings.access_token_ttl_seconds)
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(user_id),
        "org": str(org_id),
        "role": role,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return sign_token(settings, claims), expires_at


def decode_access_token(settings: Settings, token: str) -> AccessClaims:
    claims = verify_token(settings, token, audience=settings.jwt_audience)
    try:
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            org_id=uuid.UUID(claims["org"]),
            role=str(claims["role"]),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(claims["exp"]).astimezone(),
        )
    except (KeyError, ValueError) as exc:
        raise InvalidToken("Token claims are incomplete") from exc
