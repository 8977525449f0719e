"""The demo world `coalition dev` and `coalition seed-demo` create (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from coalition.campaigns.models import Campaign
from coalition.campaigns.schemas.campaigns import (
    AudienceIn,
    CampaignCreate,
    FeeIn,
    OfferIn,
    ParticipantIn,
)
from coalition.campaigns.services import drafts, workflow
from coalition.merchants.models import Organization, Store, Terminal, User
from coalition.merchants.services import organizations, staff, stores, terminals
from coalition.platform.auth import Principal
from coalition.platform.db import utcnow
from coalition.platform.jobs import commit

DEMO_PASSWORD = "coalition-demo"  # noqa: S105 - printed for the local demo on purpose


@dataclass(frozen=True)
class DemoStore:
    name: str
    address: str
    city: str
    terminals: tuple[str, ...]


WEEK = {day: [["08:00", "22:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@dataclass(frozen=True)
class DemoOrg:
    name: str
    kind: str
    industry: str
    staff: tuple[tuple[str, str, str], ...]  # (email, display name, role)
    cities: tuple[str, ...] = ()
    stores: tuple[DemoStore, ...] = ()


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
        ("Shanghai",),
        (
            DemoStore(
                "Nanjing Road flagship 南京路旗舰店", "800 Nanjing Rd E", "Shanghai", ("Counter 1",)
            ),
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
        ("Shanghai", "Hangzhou"),
        (
            DemoStore(
                "People's Square 人民广场店",
                "120 Xizang Rd M",
                "Shanghai",
                ("Counter 1", "Counter 2"),
            ),
            DemoStore("West Lake 西湖店", "8 Beishan St", "Hangzhou", ("Counter 1",)),
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
        ("Shanghai",),
        (DemoStore("Lujiazui branch 陆家嘴支行", "88 Century Ave", "Shanghai", ("Teller 1",)),),
    ),
    DemoOrg(
        "BrightPath Education 明途教育",
        "merchant",
        "education",
        (
            ("admin@edu.demo", "Edu Admin", "admin"),
            ("cashier@edu.demo", "Edu Cashier", "cashier"),
        ),
        ("Shanghai", "Beijing"),
        (
            DemoStore(
                "Xuhui learning center 徐汇学习中心", "1 Hengshan Rd", "Shanghai", ("Front desk",)
            ),
        ),
    ),
)


@dataclass
class DemoReport:
    created: bool
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (org, email, role)
    # (org, store, terminal, key): a fresh key for each org's first terminal, made at every
    # seed so the printed key always works (the previous one stops at once).
    terminal_keys: list[tuple[str, str, str, str]] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)


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
        if not org.cities and spec.cities:
            org.cities = list(spec.cities)
        await _seed_stores(session, org, spec, report)
    await commit(session)
    await _seed_campaigns(session, report)
    return report


async def _org(session: AsyncSession, name: str) -> Organization:
    org: Organization = (
        await session.execute(select(Organization).where(col(Organization.name) == name))
    ).scalar_one()
    return org


async def _acting(session: AsyncSession, org: Organization, email: str) -> Principal:
    user = (await session.execute(select(User).where(col(User.email) == email))).scalar_one()
    return Principal(kind="user", org_id=org.id, org_kind=org.kind, role=user.role, user_id=user.id)


async def _seed_campaigns(session: AsyncSession, report: DemoReport) -> None:
    """Two running joint campaigns: carrier + café, and bank + carrier (only on a first seed)."""
    carrier, cafe, bank = (
        await _org(session, DEMO_ORGS[0].name),
        await _org(session, DEMO_ORGS[1].name),
        await _org(session, DEMO_ORGS[2].name),
    )
    exists = (await session.execute(select(col(Campaign.id)).limit(1))).first()
    if exists:
        return
    now = utcnow()
    cafe_stores = (
        await session.execute(select(col(Store.id)).where(col(Store.org_id) == cafe.id))
    ).scalars()
    coffee = CampaignCreate(
        name="Coffee with Coalition 联合咖啡日",
        description="¥5 off any order of ¥20 or more at Bean There Coffee",
        currency="CNY",
        timezone="Asia/Shanghai",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=60),
        code_prefix="CAFE",
        offer=OfferIn(kind="amount_off", value=500, min_spend=2000, valid_days_after_claim=7),
        total_quantity=10_000,
        participants=[
            ParticipantIn(org_id=carrier.id, share_bp=5000),
            ParticipantIn(org_id=cafe.id, share_bp=5000, budget_cap=2_500_000),
        ],
        total_budget=5_000_000,
        fee=FeeIn(bp=200, payer="redeeming_merchant"),
        store_ids=list(cafe_stores),
    )
    deposit = CampaignCreate(
        name="New depositor welcome 开户礼",
        description="Spend ¥1000, get ¥100 off: for 3-star subscribers and up",
        currency="CNY",
        timezone="Asia/Shanghai",
        starts_at=now - timedelta(days=1),
        ends_at=now + timedelta(days=90),
        code_prefix="BANK",
        offer=OfferIn(kind="threshold", value=10_000, threshold=100_000, valid_days_after_claim=30),
        audience=AudienceIn(kind="segment", min_tier=3),
        total_quantity=2_000,
        participants=[
            ParticipantIn(org_id=bank.id, share_bp=7000),
            ParticipantIn(org_id=carrier.id, share_bp=3000),
        ],
        total_budget=20_000_000,
        fee=FeeIn(fixed=100, payer="owner"),
        settlement_cycle="monthly",
    )
    for spec, owner, partner, owner_email, partner_email in (
        (coffee, carrier, cafe, "marketing@carrier.demo", "admin@cafe.demo"),
        (deposit, bank, carrier, "marketing@bank.demo", "marketing@carrier.demo"),
    ):
        acting_owner = await _acting(session, owner, owner_email)
        loaded = await drafts.create_campaign(session, acting_owner, spec)
        proposed = await workflow.propose(session, acting_owner, loaded.campaign.id)
        await workflow.accept(
            session,
            await _acting(session, partner, partner_email),
            loaded.campaign.id,
            terms_version=proposed.campaign.terms_version,
        )
        await workflow.activate(session, acting_owner, loaded.campaign.id)
        report.campaigns.append(spec.name)
    report.created = True


async def _seed_stores(
    session: AsyncSession, org: Organization, spec: DemoOrg, report: DemoReport
) -> None:
    first_key_printed = False
    for store_spec in spec.stores:
        store = (
            await session.execute(
                select(Store).where(col(Store.org_id) == org.id, col(Store.name) == store_spec.name)
            )
        ).scalar_one_or_none()
        if store is None:
            store = await stores.create_store(
                session,
                None,
                org,
                name=store_spec.name,
                address=store_spec.address,
                city=store_spec.city,
                opening_hours=WEEK,
            )
            report.created = True
        for terminal_name in store_spec.terminals:
            terminal = (
                await session.execute(
                    select(Terminal).where(
                        col(Terminal.store_id) == store.id, col(Terminal.name) == terminal_name
                    )
                )
            ).scalar_one_or_none()
            if terminal is None:
                terminal, key = await terminals.register_terminal(
                    session, None, store, terminal_name
                )
                report.created = True
            elif not first_key_printed and terminal.status == "active":
                key, _ = await terminals.rotate_key(session, None, terminal, grace_seconds=0)
            else:
                continue
            if not first_key_printed:
                report.terminal_keys.append((spec.name, store.name, terminal.name, key.full))
                first_key_printed = True
