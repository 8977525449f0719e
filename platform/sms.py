"""Text messages to subscribers' phones through an SMS gateway, and phone-number handling.

Phone numbers are personal data: they are normalized to E.164 (`normalize_phone`), used to
address a message and to compute a keyed hash, and never stored or logged in the clear
(`mask_phone` keeps the last four digits for display and logs).

Gateways are chosen by `COALITION_SMS_GATEWAY` (`sms_gateway(settings)`; unset, `console`
except in production, where it is `disabled`):

- `console` (development and tests): nothing leaves the machine. Every message is logged (the
  recipient masked), kept in memory (the last `OUTBOX_SIZE` of the process, for tests and the
  demo) and appended to `<data_dir>/sms-outbox.log` (`.coalition/sms-outbox.log` under
  `coalition dev`), so a developer reads one-time codes with
  `tail -f .coalition/sms-outbox.log`. It writes the codes it sends in plain text, so it is
  refused in production. Tests read `OUTBOX.messages_to(phone)`.
- `disabled`: sending answers 503 `sms_unavailable` (customers then sign in only with tokens of
  the carrier's identity service).

There is no adapter for a real SMS provider yet: none is reachable from here to test against.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import threading
import unicodedata
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import structlog

from coalition.platform.db import utcnow
from coalition.platform.errors import DomainError, ValidationFailed
from coalition.platform.settings import Settings

log = structlog.get_logger("coalition.sms")

OUTBOX_SIZE = 500
OUTBOX_FILE = "sms-outbox.log"
DEFAULT_COUNTRY_CODE = "86"

_SEPARATORS = re.compile(r"[\s().\-/]")
_CN_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


# --- phone numbers ----------------------------------------------------------------------------


def normalize_phone(raw: str, *, field: str = "phone") -> str:
    """The E.164 form of a phone number (`+8613812345678`), or 422 naming `field`.

    Accepts `+<country><number>`, `00<country><number>`, and an 11-digit Chinese mobile number
    with or without `86` in front (`+86` is the default country). Spaces, dashes, dots, slashes,
    parentheses and full-width characters are tolerated. Chinese numbers must be mobiles (they
    are the ones that receive text messages).
    """
    compact = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw).strip())
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if compact.startswith("+"):
        number = compact
    elif _CN_MOBILE.match(compact):
        number = f"+{DEFAULT_COUNTRY_CODE}{compact}"
    elif compact.startswith(DEFAULT_COUNTRY_CODE) and _CN_MOBILE.match(compact[2:]):
        number = "+" + compact
    else:
        raise ValidationFailed("Not a phone number we can send a text message to", field=field)
    if not _E164.match(number):
        raise ValidationFailed("Not a valid international phone number", field=field)
    if number.startswith(f"+{DEFAULT_COUNTRY_CODE}") and not _CN_MOBILE.match(number[3:]):
        raise ValidationFailed("Not a mobile phone number", field=field)
    return number


def mask_phone(phone: str) -> str:
    """What may be shown or logged of a number: its last four digits (`*******5678`)."""
    digits = [c for c in phone if c.isdigit()]
    return "*******" + "".join(digits[-4:])


# --- gateways ---------------------------------------------------------------------------------


class SmsUnavailable(DomainError):
    status_code, code, title = 503, "sms_unavailable", "Text messages cannot be sent right now"


class SmsGateway(Protocol):
    async def send(self, phone: str, message: str) -> None:
        """Send `message` to `phone` (E.164). Raises `SmsUnavailable` when it cannot."""
        ...


@dataclass(frozen=True, slots=True)
class SentSms:
    at: datetime
    to: str  # masked (`*******5678`)
    message: str
    recipient_digest: str  # keyed per process: finds a number's messages, reveals nothing


class SmsOutbox:
    """The last messages sent in this process (a ring buffer; development and tests only)."""

    def __init__(self, size: int = OUTBOX_SIZE) -> None:
        self._messages: deque[SentSms] = deque(maxlen=size)
        self._key = secrets.token_bytes(32)  # lives and dies with the process
        self._lock = threading.Lock()

    def digest(self, phone: str) -> str:
        return hmac.new(self._key, phone.encode(), hashlib.sha256).hexdigest()

    def add(self, phone: str, message: str) -> SentSms:
        sms = SentSms(
            at=utcnow(), to=mask_phone(phone), message=message, recipient_digest=self.digest(phone)
        )
        with self._lock:
            self._messages.append(sms)
        return sms

    def messages_to(self, phone: str) -> list[SentSms]:
        """Messages sent to `phone` (any accepted spelling), oldest first."""
        digest = self.digest(normalize_phone(phone))
        with self._lock:
            return [m for m in self._messages if m.recipient_digest == digest]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def __iter__(self) -> Iterator[SentSms]:
        with self._lock:
            return iter(list(self._messages))

    def __len__(self) -> int:
        return len(self._messages)


OUTBOX = SmsOutbox()


class ConsoleSmsGateway:
    """Sends nothing: logs the message, keeps it in `OUTBOX`, appends it to `outbox_file`."""

    def __init__(self, *, outbox: SmsOutbox = OUTBOX, outbox_file: Path | None = None) -> None:
        self.outbox = outbox
        self.outbox_file = outbox_file

    async def send(self, phone: str, message: str) -> None:
        sms = self.outbox.add(phone, message)
        log.info("sms_sent", gateway="console", to=sms.to, message=message)
        if self.outbox_file is not None:
            line = f"{sms.at.isoformat(timespec='seconds')}\tto {sms.to}\t{message}\n"
            await asyncio.to_thread(_append, self.outbox_file, line)


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        file.write(line)


class DisabledSmsGateway:
    async def send(self, phone: str, message: str) -> None:
        log.warning("sms_not_sent", gateway="disabled", to=mask_phone(phone))
        raise SmsUnavailable("This installation has no SMS gateway configured")


def sms_gateway(settings: Settings) -> SmsGateway:
    """The gateway named by `COALITION_SMS_GATEWAY`; unset: `console`, or `disabled` in
    production."""
    production = settings.environment == "production"
    name = getattr(settings, "sms_gateway", None) or ("disabled" if production else "console")
    if name == "disabled":
        return DisabledSmsGateway()
    if name == "console":
        if production:
            raise RuntimeError("the console SMS gateway prints one-time codes: not in production")
        # Tests read the in-memory outbox; they do not litter the data directory.
        outbox_file = None if settings.environment == "test" else settings.data_dir / OUTBOX_FILE
        return ConsoleSmsGateway(outbox_file=outbox_file)
    raise RuntimeError(f"unknown SMS gateway {name!r} (COALITION_SMS_GATEWAY)")
