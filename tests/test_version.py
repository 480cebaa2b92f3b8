"""The version is written once, in webhook/__init__.py; every other place that names it must agree."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import yaml

from webhook import __version__

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_package_reports_the_source_version() -> None:
    assert version("pullcheck") == __version__


def test_the_chart_ships_this_version() -> None:
    chart = yaml.safe_load((ROOT / "charts/pullcheck/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (__version__, __version__)


def test_the_image_tag_in_build_instructions_is_this_version() -> None:
    for path in ("Dockerfile", "docs/install.md"):
        tags = re.findall(r"ghcr\.io/pullcheck/pullcheck:(\S+?)[\s`]", (ROOT / path).read_text())
        assert tags and set(tags) == {__version__}, path


def test_the_ci_examples_pin_this_release() -> None:
    text = (ROOT / "docs/ci.md").read_text()
    pinned = re.findall(r"(?:rev|version): v(\d+\.\d+\.\d+)", text)
    pinned += re.findall(r"/releases/v([\d.]+)/", text)
    assert pinned and set(pinned) == {__version__}
