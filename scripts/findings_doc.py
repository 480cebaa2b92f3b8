"""Write the per-code section of docs/findings.md from webhook/explain.py (tests/test_explain.py: drift)."""

from __future__ import annotations

from pathlib import Path

from webhook.explain import DOC_BEGIN, DOC_END, findings_doc_section

DOC = Path(__file__).resolve().parent.parent / "docs" / "findings.md"


def main() -> None:
    text = DOC.read_text()
    if DOC_BEGIN in text:
        before, rest = text.split(DOC_BEGIN, 1)
        after = rest.split(DOC_END, 1)[1]
    else:
        before, after = text.rstrip("\n") + "\n\n## Each code\n\n", "\n"
    DOC.write_text(before + findings_doc_section() + after)


if __name__ == "__main__":
    main()
