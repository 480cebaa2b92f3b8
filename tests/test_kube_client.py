"""Loading API credentials: a kubeconfig that cannot be used is one ConfigError line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.errors import ConfigError
from webhook.kube import api_client


@pytest.mark.parametrize(
    "content",
    [
        "a: [\n",  # not YAML
        "just a string\n",  # YAML, not a mapping
        "clusters: 5\ncontexts: 7\ncurrent-context: x\n",  # a mapping of the wrong shapes
    ],
)
def test_an_unusable_kubeconfig_is_one_config_error_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    with pytest.raises(ConfigError, match="cannot use") as raised:
        api_client(str(path))
    assert "\n" not in str(raised.value)


def test_a_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot use"):
        api_client(str(tmp_path / "absent"))
