"""Coupon codes: CSPRNG, Crockford base32, a check character, shown in groups.

A code body is 13 random symbols (65 bits) plus one Luhn-mod-32 check symbol, which catches
every single mistyped symbol and most swaps of neighbours. People see it grouped
(`7KQ2-M9XD-4TPA-HC`), optionally after a campaign prefix (`CAFE-7KQ2-...`). Parsing accepts
any case, spaces or hyphens, the usual confusions (I/L -> 1, O -> 0), and a scanned QR URL;
a malformed code or a wrong check symbol is refused before anything is looked up.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlsplit

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
BODY_LENGTH = 13  # 13 * 5 = 65 random bits
CODE_LENGTH = BODY_LENGTH + 1
_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})
_PREFIX = re.compile(r"^[A-Z]{2,8}$")


class InvalidCode(ValueError):
    """Not a coupon code: wrong symbols, wrong length, or a failed check symbol."""


def check_symbol(body: str) -> str:
    """Luhn mod 32 over Crockford symbols."""
    total = 0
    factor = 2
    for symbol in reversed(body):
        addend = factor * _VALUE[symbol]
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


def new_code() -> str:
    """A fresh code (no prefix, no grouping): what is stored and unique in the database."""
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return body + check_symbol(body)


def display(code: str, prefix: str | None = None) -> str:
    grouped = "-".join(code[i : i + 4] for i in range(0, len(code), 4))
    return f"{prefix}-{grouped}" if prefix else grouped


def validate_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError("a code prefix is 2 to 8 letters A-Z")
    return prefix


def parse(text: str) -> str:
    """The stored form of a typed, grouped, prefixed or scanned (QR URL) code."""
    raw = text.strip()
    if "://" in raw:
        raw = _code_from_url(raw)
    cleaned = re.sub(r"[\s-]", "", raw.upper())
    if len(cleaned) > CODE_LENGTH and cleaned[:-CODE_LENGTH].isalpha():
        cleaned = cleaned[-CODE_LENGTH:]  # drop a campaign prefix
    cleaned = cleaned.translate(_CONFUSABLE)
    if len(cleaned) != CODE_LENGTH or any(c not in _VALUE for c in cleaned):
        raise InvalidCode("A coupon code has 14 letters and digits")
    if check_symbol(cleaned[:-1]) != cleaned[-1]:
        raise InvalidCode("This coupon code has a typo (its check character does not match)")
    return cleaned


def _code_from_url(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qs(parts.query).get("code")
    if query:
        return query[0]
    return parts.path.rstrip("/").rsplit("/", 1)[-1]
