"""Rendering results for people (a table) and machines (the `pullcheck/v1` JSON document)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from webhook.findings import ALLOW, DENY, REMEDY, WARN, ImageResult, worst

API_VERSION = "pullcheck/v1"


def to_json(results: Sequence[ImageResult]) -> str:
    return json.dumps({"apiVersion": API_VERSION, "results": [r.to_json() for r in results]}, indent=2)


def reason(result: ImageResult) -> str:
    """One line saying why an image got its verdict: each worst finding once, with where it fails."""
    verdict = result.verdict
    if verdict == ALLOW:
        return ""
    where: dict[tuple[str, str], list[str]] = {}
    for finding in result.findings:
        if worst([finding.severity]) == verdict:
            targets = where.setdefault((finding.code, finding.message), [])
            target = f"{finding.runtime} {finding.platform}".strip()
            if target and target not in targets:
                targets.append(target)
    parts = []
    for (code, message), targets in where.items():
        on = f" [{', '.join(targets)}]" if targets else ""
        parts.append(f"{code}: {message}{on}")
    remedies = dict.fromkeys(REMEDY[code] for code, _ in where if code in REMEDY)
    return "; ".join(parts) + (f" ({'; '.join(remedies)})" if remedies else "")


def to_table(results: Sequence[ImageResult]) -> str:
    """One line per image: verdict, image, reason; then a summary line."""
    width = max((len(r.image) for r in results), default=5)
    lines = [f"{'VERDICT':7}  {'IMAGE':{width}}  REASON"]
    for result in results:
        lines.append(f"{result.verdict.upper():7}  {result.image:{width}}  {reason(result)}".rstrip())
    counts = {v: sum(1 for r in results if r.verdict == v) for v in (DENY, WARN, ALLOW)}
    noun = "image" if len(results) == 1 else "images"
    lines.append(
        f"{len(results)} {noun}: {counts[DENY]} denied, {counts[WARN]} warned, {counts[ALLOW]} allowed"
    )
    return "\n".join(lines)
