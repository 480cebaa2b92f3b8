"""When a file that pullcheck re-reads has changed."""

from __future__ import annotations

import os

FileStamp = tuple[int, int, int]


def file_stamp(path: str) -> FileStamp:
    """The file's modification time (ns), size and inode: a write changes the first two, a rename over it
    (as a ConfigMap or Secret volume update does) the inode. Raises OSError when the file cannot be read."""
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino
