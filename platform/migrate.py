"""Alembic, driven from code: `coalition migrate` and the tests use these helpers."""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

from coalition.platform.db import metadata

MODEL_MODULES = (
    "coalition.platform.jobs",
    "coalition.platform.audit",
    "coalition.platform.idempotency",
    "coalition.merchants.models",
    "coalition.campaigns.models",
    "coalition.settlement.models",
)


def all_metadata() -> MetaData:
    """The metadata with every domain's tables registered on it."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return metadata


def alembic_config(database_url: str) -> Config:
    migrations = Path(importlib.import_module("coalition.migrations").__file__ or "").parent
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
