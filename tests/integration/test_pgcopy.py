"""The binary COPY encoder against PostgreSQL: what it writes reads back as the same values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform import pgcopy
from coalition.platform.db import driver_connection

COLUMNS = ["id", "n", "big", "code", "at", "amounts", "flag", "note"]
TIMES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(0, 30))
    width = draw(st.integers(1, 16))
    return {
        "ids": draw(st.lists(st.uuids(), min_size=count, max_size=count)),
        "numbers": draw(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=count, max_size=count)),
        "codes": draw(
            st.lists(
                st.text("0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=width, max_size=width),
                min_size=count,
                max_size=count,
            )
        ),
        "width": width,
        "big": draw(st.integers(-(2**63), 2**63 - 1)),
        "at": draw(TIMES),
        "amounts": draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5)),
        "flag": draw(st.booleans()),
    }


def examples() -> list[dict[str, Any]]:
    """Batches drawn by Hypothesis (the COPYs run afterwards, in the event loop)."""
    drawn: list[dict[str, Any]] = []

    # Drawing only (no work in the body): a loaded machine must not fail it as "too slow".
    @settings(
        max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(batches())
    def collect(batch: dict[str, Any]) -> None:
        drawn.append(batch)

    collect()
    return drawn


async def test_encoded_rows_read_back_from_postgresql_as_written(session: AsyncSession) -> None:
    driver = await driver_connection(session)
    await driver.execute(
        "CREATE TEMPORARY TABLE copied (id uuid, n integer, big bigint, code varchar(16), "
        "at timestamptz, amounts bigint[], flag boolean, note text) ON COMMIT DROP"
    )
    drawn = examples()
    drawn.append(  # a fixed case too: the epoch, a negative time, an empty array
        {
            "ids": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)],
            "numbers": [0, -1],
            "codes": ["A", "Z"],
            "width": 1,
            "big": 0,
            "at": datetime(2000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
            "amounts": [],
            "flag": False,
        }
    )
    for batch in drawn:
        count = len(batch["ids"])
        stream = pgcopy.encode_rows(
            count,
            [
                pgcopy.Packed(16, b"".join(pgcopy.uuid_value(i) for i in batch["ids"])),
                pgcopy.Packed(4, pgcopy.packed_int4(batch["numbers"])),
                pgcopy.Const(pgcopy.int8(batch["big"])),
                pgcopy.Packed(batch["width"], pgcopy.packed_text(batch["codes"], batch["width"])),
                pgcopy.Const(pgcopy.timestamptz(batch["at"])),
                pgcopy.Const(pgcopy.int8_array(batch["amounts"])),
                pgcopy.Const(pgcopy.boolean(batch["flag"])),
                pgcopy.Const(None),
            ],
        )
        await driver.execute("TRUNCATE copied")
        await driver.copy_to_table("copied", source=stream, columns=COLUMNS, format="binary")
        rows = await driver.fetch("SELECT * FROM copied")
        assert len(rows) == count
        for row, id_, number, code in zip(
            rows, batch["ids"], batch["numbers"], batch["codes"], strict=True
        ):
            assert uuid.UUID(str(row["id"])) == id_
            assert (row["n"], row["code"]) == (number, code)
            assert row["big"] == batch["big"] and row["at"] == batch["at"]
            assert list(row["amounts"]) == batch["amounts"]
            assert row["flag"] is batch["flag"] and row["note"] is None
    await session.rollback()
