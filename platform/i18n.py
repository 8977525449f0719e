"""Languages of the portal: zh-CN and en, chosen from a cookie or Accept-Language; message
catalogs; money, numbers and dates formatted with Babel in the reader's locale.

Catalogs are JSON files in `platform/locales/`, one per language, mapping a message id to its
text. Interface strings use their English text as the id (so `en` needs no entry for them);
error messages use `error.<code>`, the stable problem `code` of the API, and are listed in both
languages. A message missing from a catalog is shown as `⟦id⟧` outside production, which the
page-walking test looks for.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
BABEL_LOCALES = {"zh-CN": "zh_Hans_CN", "en": "en"}
LANGUAGE_NAMES = {"zh-CN": "中文", "en": "English"}
LOCALES_DIR = Path(__file__).parent / "locales"
MISSING_MARK = "⟦{}⟧"


@cache
def catalog(language: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((LOCALES_DIR / f"{language}.json").read_text("utf-8"))
    return data


def negotiate(accept_language: str | None, cookie: str | None = None) -> str:
    """The language to answer in: the switch's cookie, else the best of Accept-Language."""
    if cookie in LANGUAGES:
        return str(cookie)
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag:
            weighted.append((-quality, index, tag.strip().lower()))
    for _, _, tag in sorted(weighted):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


class Translator:
    """Messages, money and dates for one language (and one organization's time zone)."""

    def __init__(self, language: str, *, mark_missing: bool, timezone: str = "Asia/Shanghai"):
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self.locale = Locale.parse(BABEL_LOCALES[self.language])
        self.mark_missing = mark_missing
        self.timezone = timezone

    def gettext(self, message: str, **values: Any) -> str:
        text = catalog(self.language).get(message)
        if text is None:
            if self.language == "en" and not message.startswith("error."):
                text = message
            else:
                text = MISSING_MARK.format(message) if self.mark_missing else message
        return text.format(**values) if values else text

    def error(self, code: str, fallback: str | None = None) -> str:
        """The human message for an API problem `code`."""
        key = f"error.{code}"
        if key in catalog(self.language):
            return catalog(self.language)[key]
        if fallback and not self.mark_missing:
            return fallback
        return self.gettext(key)

    def money(self, amount: int | None, currency: str = "CNY") -> str:
        """Integer minor units shown with the currency's symbol (¥ for CNY in both languages)."""
        if amount is None:
            return "—"
        digits = get_currency_precision(currency)
        text = format_currency(amount / 10**digits, currency, locale=self.locale)
        return text.replace("CN¥", "¥")

    def number(self, value: int | float) -> str:
        return format_decimal(value, locale=self.locale)

    def percent(self, value: float) -> str:
        return format_percent(value, format="#,##0.0%", locale=self.locale)

    def datetime(self, value: dt.datetime | None, timezone: str | None = None) -> str:
        if value is None:
            return "—"
        zone = ZoneInfo(timezone or self.timezone)
        return format_datetime(value, format="medium", tzinfo=zone, locale=self.locale)

    def date(self, value: dt.datetime | None, timezone: str | None = None) -> str:
        if value is None:
            return "—"
        zone = ZoneInfo(timezone or self.timezone)
        return format_datetime(value, format="yyyy-MM-dd", tzinfo=zone, locale=self.locale)

    def day(self, value: dt.date | None) -> str:
        """A calendar day (already local, such as a statement period's first and last day)."""
        return "—" if value is None else value.isoformat()
