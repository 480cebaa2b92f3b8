"""docs/architecture.md, the import-linter contracts and the package say the same thing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "webhook"


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _contract_layers() -> list[set[str]]:
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    return [{name.strip() for name in row.split(":")} for row in layers]


def _documented_layers() -> list[set[str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## The layers, top to bottom", 1)[1].split("\n\n")[2]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    return [set(re.findall(r"`([\w_]+)`", row.split("|")[2])) for row in rows]


def _package_modules() -> set[str]:
    modules = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return modules | {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def test_the_page_shows_the_layers_of_the_contract_in_order() -> None:
    assert _documented_layers() == _contract_layers()


def test_every_module_stands_in_one_layer() -> None:
    layered = [name for layer in _contract_layers() for name in layer]
    assert sorted(layered) == sorted(_package_modules())


def test_the_core_contract_covers_every_module_below_the_adapters() -> None:
    layers = _contract_layers()
    core = set().union(*layers[2:])  # below the faces and the adapters
    (forbidden,) = [c for c in _contracts() if c["name"].startswith("The core imports no")]
    assert {name.removeprefix("webhook.") for name in forbidden["source_modules"]} == core
