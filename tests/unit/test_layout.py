"""The layout promises of the design: one `coalition` package, and no shadowed `platform`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_platform_folder_is_not_a_regular_package() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_still_imports_from_the_repository_root() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __import__("platform").system()


def test_code_folders_import_as_coalition_subpackages() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import coalition.platform.app, coalition.merchants.models, coalition.campaigns, "
            "coalition.settlement, coalition.migrations; import platform; "
            "assert platform.__file__.endswith('platform.py')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {"coalition", "coalition.platform"}
    for folder in ("merchants", "campaigns", "settlement", "migrations"):
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT).parts
            found.add(".".join(("coalition", *relative)))
    assert found == listed
