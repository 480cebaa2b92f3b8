"""Render manifests/ from charts/pullcheck with `helm template`, or with --check say whether they drifted.

`make manifests` writes them; tests/test_chart_render.py runs --check. The helm used is the pinned one of
the end-to-end tests (found or built by tests/e2e/build_binaries.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e import build_binaries  # noqa: E402 - the repository root has to be on the path first

CHART = ROOT / "charts" / "pullcheck"
OUTPUT = ROOT / "manifests"
NAMESPACE = "pullcheck"
# File name -> the helm values that make it.
VARIANTS = {
    "pullcheck.yaml": [],
    "pullcheck-cert-manager.yaml": ["--set", "certificates.method=cert-manager"],
}
HEADER = """\
# Rendered from charts/pullcheck by `make manifests`; do not edit (edit the chart and render again).
# Install: kubectl apply -f {name}
apiVersion: v1
kind: Namespace
metadata:
  name: {namespace}
"""


def render(helm: Path, name: str, values: list[str]) -> str:
    done = subprocess.run(
        [str(helm), "template", "pullcheck", str(CHART), "--namespace", NAMESPACE, *values],
        capture_output=True,
        text=True,
        check=True,
    )
    return HEADER.format(name=name, namespace=NAMESPACE) + done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when manifests/ differs from the chart")
    args = parser.parse_args()
    helm = build_binaries.ensure()["helm"]
    drifted = []
    for name, values in VARIANTS.items():
        text = render(helm, name, values)
        path = OUTPUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drifted.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if drifted:
        print(f"manifests/{', '.join(drifted)} differ from the chart: run `make manifests`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
