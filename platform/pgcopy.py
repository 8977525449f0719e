"""PostgreSQL's binary COPY format, written a column at a time for rows of fixed width.

A bulk write whose rows differ only in a few fixed-width columns (ids, codes of one length,
small integers) and share every other value is encoded without a loop per row: one row is
laid out once as a template, repeated, and each varying column is written into all rows at
once with stepped slice assignments (C-level byte copies). The result is the whole COPY
stream (header, rows, trailer) for `asyncpg.Connection.copy_to_table(..., format="binary")`.

Value encoders follow PostgreSQL's send functions: integers big-endian, uuid as its 16 bytes,
text as UTF-8, timestamptz as microseconds since 2000-01-01 UTC, one-dimensional arrays with
their element type's oid. Pure: no I/O.
"""

from __future__ import annotations

import struct
import sys
import uuid
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # signature, flags, no extension
TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_BIG_ENDIAN = sys.byteorder == "big"

# Element type oids (pg_type) for arrays.
INT4_OID = 23
INT8_OID = 20
UUID_OID = 2950


# --- one value -------------------------------------------------------------------------------


def int2(value: int) -> bytes:
    return struct.pack("!h", value)


def int4(value: int) -> bytes:
    return struct.pack("!i", value)


def int8(value: int) -> bytes:
    return struct.pack("!q", value)


def boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def text(value: str) -> bytes:
    return value.encode("utf-8")


def uuid_value(value: uuid.UUID | str) -> bytes:
    return (value if isinstance(value, uuid.UUID) else uuid.UUID(value)).bytes


def timestamptz(value: datetime) -> bytes:
    """Microseconds since 2000-01-01 UTC (an aware datetime)."""
    if value.tzinfo is None:
        raise ValueError("timestamptz needs an aware datetime")
    delta = value - _EPOCH
    return int8((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def int8_array(values: Sequence[int]) -> bytes:
    """A one-dimensional bigint[] (lower bound 1, no NULLs)."""
    head = struct.pack("!iiiii", 1, 0, INT8_OID, len(values), 1)
    return head + b"".join(struct.pack("!iq", 8, v) for v in values)


# --- many values of one column ---------------------------------------------------------------


def packed_int4(values: Sequence[int]) -> bytes:
    """Big-endian int4 values back to back (a `Packed` column of width 4)."""
    data = array("i", values)
    if not _BIG_ENDIAN:
        data.byteswap()
    return data.tobytes()


def packed_text(values: Sequence[str], width: int) -> bytes:
    """ASCII strings of exactly `width` characters back to back."""
    data = "".join(values).encode("ascii")
    if len(data) != width * len(values):
        raise ValueError(f"every value must be {width} ASCII characters")
    return data


# --- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    """The same encoded value (or NULL) in every row."""

    value: bytes | None


@dataclass(frozen=True, slots=True)
class Packed:
    """One encoded value of `width` bytes per row, back to back in row order."""

    width: int
    data: bytes


Column = Const | Packed


def encode_rows(count: int, columns: Sequence[Column]) -> bytearray:
    """The binary COPY stream of `count` rows whose fields are `columns` in order.

    A bytearray, not bytes: `copy_to_table` reads `bytes` as a file name.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    for column in columns:
        if isinstance(column, Packed) and (
            column.width < 0 or len(column.data) != column.width * count
        ):
            raise ValueError(
                f"a packed column of width {column.width} needs {column.width * count} bytes, "
                f"got {len(column.data)}"
            )
    template = bytearray(int2(len(columns)))
    slots: list[tuple[int, Packed]] = []  # (offset in the row, column)
    for column in columns:
        if isinstance(column, Const):
            if column.value is None:
                template += _NULL
            else:
                template += int4(len(column.value)) + column.value
        else:
            template += int4(column.width)
            slots.append((len(template), column))
            template += bytes(column.width)
    stride = len(template)
    start, end = len(HEADER), len(HEADER) + stride * count
    stream = bytearray(HEADER + bytes(template) * count + TRAILER)
    for offset, column in slots:
        width, data = column.width, column.data
        for k in range(width):
            stream[start + offset + k : end : stride] = data[k::width]
    return stream
