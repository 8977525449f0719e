"""QR images of coupons: the QR encodes the coupon page URL, which carries the code, so a phone
opens the coupon and a keyboard-wedge scanner types a URL the POS accepts as the code."""

from __future__ import annotations

import io

import qrcode
from qrcode.constants import ERROR_CORRECT_M
from qrcode.image.pure import PyPNGImage
from qrcode.image.svg import SvgPathImage


def coupon_url(public_url: str, code: str) -> str:
    return f"{public_url.rstrip('/')}/c/{code}"


def _make(data: str, factory: type, box_size: int) -> bytes:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=4)
    qr.add_data(data)
    qr.make(fit=True)
    buffer = io.BytesIO()
    qr.make_image(image_factory=factory).save(buffer)
    return buffer.getvalue()


def png(data: str, *, box_size: int = 10) -> bytes:
    """A PNG large enough to scan from a phone screen (about 330 px for a coupon URL)."""
    return _make(data, PyPNGImage, box_size)


def svg(data: str) -> bytes:
    return _make(data, SvgPathImage, 10)
