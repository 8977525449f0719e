"""The binary COPY encoder: streams read back field by field, value encoders by hand."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalition.platform import pgcopy


def read_stream(stream: bytes) -> list[list[bytes | None]]:
    """Rows of raw field values, read the way PostgreSQL reads a binary COPY stream."""
    assert stream[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, extension = struct.unpack_from("!ii", stream, 11)
    assert (flags, extension) == (0, 0)
    at = 19
    rows: list[list[bytes | None]] = []
    while True:
        (fields,) = struct.unpack_from("!h", stream, at)
        at += 2
        if fields == -1:
            assert at == len(stream)
            return rows
        row: list[bytes | None] = []
        for _ in range(fields):
            (length,) = struct.unpack_from("!i", stream, at)
            at += 4
            if length == -1:
                row.append(None)
            else:
                row.append(bytes(stream[at : at + length]))
                at += length
        rows.append(row)


@st.composite
def tables(draw: st.DrawFn) -> tuple[int, list[pgcopy.Column], list[list[bytes | None]]]:
    """A row count, columns, and the rows they should make."""
    count = draw(st.integers(0, 40))
    columns: list[pgcopy.Column] = []
    expected: list[list[bytes | None]] = [[] for _ in range(count)]
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            value = draw(st.none() | st.binary(max_size=12))
            columns.append(pgcopy.Const(value))
            for row in expected:
                row.append(value)
        else:
            width = draw(st.integers(0, 17))
            values = draw(
                st.lists(st.binary(min_size=width, max_size=width), min_size=count, max_size=count)
            )
            columns.append(pgcopy.Packed(width, b"".join(values)))
            for row, value in zip(expected, values, strict=True):
                row.append(value)
    return count, columns, expected


@settings(deadline=None)
@given(tables())
def test_every_row_carries_its_own_values_and_the_shared_ones(
    table: tuple[int, list[pgcopy.Column], list[list[bytes | None]]],
) -> None:
    count, columns, expected = table
    assert read_stream(pgcopy.encode_rows(count, columns)) == expected


def test_a_packed_column_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 8 bytes"):
        pgcopy.encode_rows(2, [pgcopy.Packed(4, b"\x00" * 7)])
    with pytest.raises(ValueError):
        pgcopy.encode_rows(-1, [])


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50))
def test_packed_int4_is_big_endian_int4_back_to_back(values: list[int]) -> None:
    assert pgcopy.packed_int4(values) == b"".join(pgcopy.int4(v) for v in values)
    assert [pgcopy.int4(v) for v in values] == [struct.pack("!i", v) for v in values]


def test_value_encoders_follow_postgresql_send_functions() -> None:
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    assert pgcopy.timestamptz(epoch) == b"\x00" * 8
    assert pgcopy.timestamptz(epoch + timedelta(microseconds=1)) == struct.pack("!q", 1)
    assert pgcopy.timestamptz(epoch - timedelta(days=1)) == struct.pack("!q", -86_400_000_000)
    with pytest.raises(ValueError):
        pgcopy.timestamptz(datetime(2026, 1, 1))  # naive
    some = uuid.uuid4()
    assert pgcopy.uuid_value(some) == pgcopy.uuid_value(str(some)) == some.bytes
    assert pgcopy.int8_array([7, -1]) == struct.pack("!iiiiiiqiq", 1, 0, 20, 2, 1, 8, 7, 8, -1)
    assert pgcopy.text("券") == "券".encode()
    assert pgcopy.boolean(True) == b"\x01" and pgcopy.boolean(False) == b"\x00"
    assert pgcopy.packed_text(["AB", "CD"], 2) == b"ABCD"
    with pytest.raises(ValueError):
        pgcopy.packed_text(["AB", "C"], 2)
