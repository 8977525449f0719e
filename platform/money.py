"""Money: integer minor units with an ISO 4217 currency, and exact splits by basis points."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

BASIS_POINTS = 10_000
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Symbols shown to people; amounts in other currencies are shown with their code.
CURRENCY_SYMBOLS = {"CNY": "¥", "USD": "$", "EUR": "€", "HKD": "HK$", "GBP": "£", "JPY": "¥"}
# Minor units per major unit (ISO 4217 exponent); everything else here uses 2.
_ZERO_DECIMAL = frozenset({"JPY", "KRW", "VND"})

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """An amount in minor units (fen, cents) of one currency. Never a float."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError("Money amounts are integers in minor units")
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot mix {self.currency} and {other.currency}")


def minor_units_per_major(currency: str) -> int:
    return 1 if currency in _ZERO_DECIMAL else 100


def format_money(amount: int, currency: str) -> str:
    """`¥12.34`, `-$0.05`, `CHF 7.00`: for people, never for arithmetic."""
    per_major = minor_units_per_major(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), per_major)
    number = f"{major:,}" if per_major == 1 else f"{major:,}.{minor:02d}"
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{currency} {number}"


def split_by_basis_points(total: int, shares: Mapping[K, int]) -> dict[K, int]:
    """Split `total` minor units by basis-point shares that sum to 10000, so that the parts add
    up to exactly `total`.

    Each part is first rounded toward zero; the units left over go one each to the parts with
    the largest remainders, ties going to the party listed first. Deterministic, and every part
    is within one unit of its exact share. A negative total (a reversal) splits as the mirror
    image of the positive one.
    """
    if sum(shares.values()) != BASIS_POINTS:
        raise ValueError("shares must sum to 10000 basis points")
    if any(bp < 0 for bp in shares.values()):
        raise ValueError("shares cannot be negative")
    if total < 0:
        return {party: -part for party, part in split_by_basis_points(-total, shares).items()}
    parts: dict[K, int] = {}
    remainders: list[tuple[int, int, K]] = []
    for order, (party, bp) in enumerate(shares.items()):
        part, remainder = divmod(total * bp, BASIS_POINTS)
        parts[party] = part
        remainders.append((-remainder, order, party))
    left = total - sum(parts.values())
    for _, _, party in sorted(remainders)[:left]:
        parts[party] += 1
    return parts


def percent_of(amount: int, basis_points: int) -> int:
    """`amount * bp / 10000`, rounded half up to whole minor units (for fees and discounts)."""
    return (amount * basis_points + BASIS_POINTS // 2) // BASIS_POINTS


# An amount typed in major units; the portal's forms check the same pattern in the browser.
MAJOR_AMOUNT = re.compile(r"^\s*[¥$€£]?\s*(\d{1,13})(?:[.,](\d{1,2}))?\s*$")


def parse_major_amount(text: str, currency: str) -> int | None:
    """Minor units of an amount a person typed in major units (`25`, `25.5`, `¥25.50`); None when
    it is not such an amount. A currency without minor units takes no decimals."""
    match = MAJOR_AMOUNT.match(text or "")
    if match is None:
        return None
    per_major = minor_units_per_major(currency)
    whole, fraction = match.group(1), match.group(2)
    if fraction and per_major == 1:
        return None
    minor = int((fraction or "").ljust(2, "0")) if per_major == 100 else 0
    return int(whole) * per_major + minor
