"""Making a file system change durable: a rename or unlink is only on disk once its directory is
fsynced (the vote guard's state file, the blob store's files)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flushes ``directory``'s entries (a file created, renamed or removed in it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
