"""Benchmark: loading a targeted campaign's customer list of N lines, against a COPY baseline.

    .venv/bin/python bench/target_list.py --count 100000

Starts from a fresh database (as `bulk_issuance.py`: a new database on the server named by
DATABASE_URL, dropped at the end, or a private embedded PostgreSQL), creates N customers and a
targeted campaign, then measures in the same run:

  baseline  COPY of the N (campaign, customer) rows straight into `campaign_target`, in one
            transaction, then the rows deleted again;
  replace   the CSV of N customer ids loaded through `targets.load_csv` (parse, COPY into the
            temporary table, unknown customers, the list written, audit, commit) onto an empty
            list: N added;
  again     the same CSV once more onto the full list: N kept, nothing written;
  add       a CSV of the same N customers sent to add: N reported as already listed;

and prints seconds, lines/s and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg
from bulk_issuance import _plain, fresh_database, setup


async def baseline(database_url: str, campaign_id: uuid.UUID, customers: list[str]) -> float:
    connection = await asyncpg.connect(_plain(database_url))
    try:
        began = time.perf_counter()
        async with connection.transaction():
            await connection.copy_records_to_table(
                "campaign_target",
                records=((campaign_id, c) for c in customers),
                columns=["campaign_id", "customer_id"],
            )
        seconds = time.perf_counter() - began
        await connection.execute("DELETE FROM campaign_target WHERE campaign_id = $1", campaign_id)
        await connection.execute("VACUUM ANALYZE campaign_target")
    finally:
        await connection.close()
    return seconds


async def loads(
    database_url: str, campaign_id: uuid.UUID, customers: list[str]
) -> list[tuple[str, float, dict[str, int]]]:
    from coalition.campaigns.models import Campaign
    from coalition.campaigns.services import targets
    from coalition.platform.auth import Principal
    from coalition.platform.db import make_engine, make_sessionmaker
    from coalition.platform.settings import Settings

    settings = Settings(database_url=database_url)
    engine = make_engine(settings, pool_size=1)
    data = ("customer_id\n" + "\n".join(customers) + "\n").encode()
    results: list[tuple[str, float, dict[str, int]]] = []
    try:
        async with make_sessionmaker(engine)() as session:
            campaign = await session.get_one(Campaign, campaign_id)
            owner = campaign.owner_org_id
            await session.rollback()
            principal = Principal(kind="user", org_id=owner, org_kind="carrier", role="marketing")
            for label, mode in (("replace", "replace"), ("again", "replace"), ("add", "add")):
                began = time.perf_counter()
                result = await targets.load_csv(
                    session, settings, principal, campaign_id, data, mode=mode
                )
                seconds = time.perf_counter() - began
                counts = {
                    "added": result.added,
                    "kept": result.kept,
                    "duplicates": result.duplicates,
                    "rejected": result.rejected,
                    "total": result.total,
                }
                results.append((label, seconds, counts))
    finally:
        await engine.dispose()
    return results


async def mark_targeted(database_url: str, campaign_id: uuid.UUID) -> None:
    connection = await asyncpg.connect(_plain(database_url))
    try:
        await connection.execute(
            "UPDATE campaign SET audience = 'targeted' WHERE id = $1", campaign_id
        )
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    with fresh_database() as (url, where, _):
        from coalition.platform import migrate

        print(f"database: {where}")
        migrate.upgrade(url)
        campaign_id, customers = asyncio.run(setup(url, args.count))
        asyncio.run(mark_targeted(url, campaign_id))
        base = asyncio.run(baseline(url, campaign_id, customers))
        print(
            f"baseline  COPY {args.count:,} rows into campaign_target: {base:.2f} s "
            f"({args.count / base:,.0f} rows/s)"
        )
        for label, seconds, counts in asyncio.run(loads(url, campaign_id, customers)):
            shown = ", ".join(f"{k} {v:,}" for k, v in counts.items())
            print(
                f"{label:<9} {args.count:,}-line CSV: {seconds:.2f} s "
                f"({args.count / seconds:,.0f} lines/s, {seconds / base:.2f}x baseline): {shown}"
            )


if __name__ == "__main__":
    main()
