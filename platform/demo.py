"""The demo world `coalition dev` and `coalition seed-demo` create (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.merchants.models import Organization, User
from coalition.merchants.services import organizations, staff
from coalition.platform.jobs import commit

DEMO_PASSWORD = "coalition-demo"  # noqa: S105 - printed for the local demo on purpose


@dataclass(frozen=True)
class DemoOrg:
    name: str
    kind: str
    industry: str
    staff: tuple[tuple[str, str, str], ...]  # (email, display name, role)


DEMO_ORGS = (
    DemoOrg(
        "Coalition Mobile 联合移动",
        "carrier",
        "telecom",
        (
            ("admin@carrier.demo", "Carrier Admin", "admin"),
            ("marketing@carrier.demo", "Lin Marketing", "marketing"),
            ("finance@carrier.demo", "Chen Finance", "finance"),
        ),
    ),
    DemoOrg(
        "Bean There Coffee 豆在咖啡",
        "merchant",
        "cafe",
        (
            ("admin@cafe.demo", "Cafe Admin", "admin"),
            ("finance@cafe.demo", "Cafe Finance", "finance"),
            ("cashier@cafe.demo", "Cafe Cashier", "cashier"),
        ),
    ),
    DemoOrg(
        "Harbor Bank 港湾银行",
        "merchant",
        "bank",
        (
            ("admin@bank.demo", "Bank Admin", "admin"),
            ("marketing@bank.demo", "Bank Marketing", "marketing"),
            ("finance@bank.demo", "Bank Finance", "finance"),
        ),
    ),
    DemoOrg(
        "BrightPath Education 明途教育",
        "merchant",
        "education",
        (
            ("admin@edu.demo", "Edu Admin", "admin"),
            ("cashier@edu.demo", "Edu Cashier", "cashier"),
        ),
    ),
)


@dataclass
class DemoReport:
    created: bool
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (org, email, role)


async def seed_demo(session: AsyncSession) -> DemoReport:
    """Create the demo organizations and staff unless they already exist."""
    report = DemoReport(created=False)
    for spec in DEMO_ORGS:
        org = (
            await session.execute(select(Organization).where(col(Organization.name) == spec.name))
        ).scalar_one_or_none()
        if org is None:
            org = await organizations.create_organization(
                session, kind=spec.kind, name=spec.name, industry=spec.industry
            )
            report.created = True
        for email, display_name, role in spec.staff:
            exists = (
                await session.execute(select(col(User.id)).where(col(User.email) == email))
            ).first()
            if not exists:
                await staff.create_user(
                    session,
                    org=org,
                    email=email,
                    display_name=display_name,
                    role=role,
                    password=DEMO_PASSWORD,
                )
                report.created = True
            report.logins.append((spec.name, email, role))
    await commit(session)
    return report
