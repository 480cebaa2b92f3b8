"""Text that came from outside (a registry, a Pod spec, a Node) made safe to show.

A registry chooses media types, `artifactType` and Content-Type; a Pod names any image string. Such
text reaches status messages, warnings, audit annotations, tables and logs, where a raw ESC could drive
a terminal, a CR or LF could forge a line, a bidirectional override could hide text, and the apiserver
drops a warning that holds any control character. `printable` is the one escaping every output uses.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every character that is not printable written as its Python escape (`\\x1b`,
    `\\u202e`): C0 and C1 controls, DEL, line and paragraph separators, format characters (bidi
    overrides, zero-width ones), surrogates and unassigned code points. Printable text, non-ASCII
    letters included, comes back unchanged."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
