"""Statements for people and spreadsheets: CSV exports and the printable statement.

CSV files are UTF-8 with a byte-order mark, so spreadsheet programs read Chinese names
correctly; money columns are integer minor units written as decimal strings, next to a
`currency` column (no floats, no rounding). The printable statement is HTML rendered from
`settlement/templates/statement.html`, with a print stylesheet (A4, no navigation).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.platform.auth import Principal
from coalition.platform.money import format_money
from coalition.platform.settings import Settings
from coalition.settlement.schemas.statements import StatementLineRead, StatementRead
from coalition.settlement.services import statements

BOM = "\ufeff"
FIGURES = (
    "shares_receivable",
    "shares_payable",
    "fees_payable",
    "fee_revenue",
    "reversals_amount",
    "adjustments",
)
STATEMENT_COLUMNS = (
    "statement_id",
    "org_id",
    "organization",
    "currency",
    "cycle",
    "first_day",
    "last_day",
    "timezone",
    "status",
    "entries",
    "redemptions",
    "reversals",
    "discount",
    *FIGURES,
    "carried_in",
    "net",
    "settlement",
    "closed_at",
    "approved_at",
)
LINE_COLUMNS = (
    "statement_id",
    "organization",
    "currency",
    "kind",
    "campaign_id",
    "campaign",
    "store_id",
    "store",
    "source_statement_id",
    "redemptions",
    "reversals",
    "discount",
    *FIGURES,
    "carried",
    "net",
    "funder_shares",
)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent.parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """UTF-8 with a BOM, CRLF line ends (RFC 4180)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text(value) for value in row])
    return (BOM + buffer.getvalue()).encode("utf-8")


def statement_row(s: StatementRead) -> list[Any]:
    return [
        s.id,
        s.org_id,
        s.org_name,
        s.currency,
        s.cycle,
        s.first_day,
        s.last_day,
        s.timezone,
        s.status,
        s.entries,
        s.redemptions,
        s.reversals,
        s.discount,
        *(getattr(s, name) for name in FIGURES),
        s.carried_in,
        s.net,
        s.settlement,
        s.closed_at,
        s.approved_at,
    ]


def _shares(line: StatementLineRead) -> str:
    return "; ".join(f"{s.org_name or s.org_id}: {s.amount}" for s in line.funder_shares)


def line_row(statement: StatementRead, line: StatementLineRead) -> list[Any]:
    return [
        statement.id,
        statement.org_name,
        statement.currency,
        line.kind,
        line.campaign_id,
        line.campaign_name,
        line.store_id,
        line.store_name,
        line.source_statement_id,
        line.redemptions,
        line.reversals,
        line.discount,
        *(getattr(line, name) for name in FIGURES),
        line.carried,
        line.net,
        _shares(line),
    ]


async def statements_csv(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    where: statements.StatementFilter,
) -> bytes:
    """Every statement the filter selects (no paging), one row each."""
    items, _ = await statements.list_statements(session, principal, settings, where, limit=None)
    return to_csv(STATEMENT_COLUMNS, (statement_row(s) for s in items))


async def lines_csv(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    statement_id: uuid.UUID,
    *,
    by: str,
) -> bytes:
    statement = await statements.read_statement(session, principal, statement_id, settings)
    lines = await statements.read_lines(session, principal, statement_id, by=by)
    return to_csv(LINE_COLUMNS, (line_row(statement, line) for line in lines.items))


async def printable(
    session: AsyncSession, principal: Principal, settings: Settings, statement_id: uuid.UUID
) -> str:
    """The statement as a printable HTML page (lines by campaign and store)."""
    statement = await statements.read_statement(session, principal, statement_id, settings)
    lines = await statements.read_lines(session, principal, statement_id, by="campaign_store")

    def money(amount: int) -> str:
        return format_money(amount, statement.currency)

    return _templates.get_template("statement.html").render(
        statement=statement, lines=lines.items, money=money, figures=FIGURES
    )
