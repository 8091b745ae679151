"""Files: atomic writes (a crash leaves either the old file or the new one, never half of one) and one JSON reader."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The process umask, read once: a temp file from mkstemp is private (0600), but the file it becomes
# should have the mode any new file gets (0644 under the usual umask), so reports stay readable.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: Path, error: type[Exception] = ValueError):
    """The JSON content of a file; ``error`` (one line naming the file) if it is not JSON."""
    import json

    try:
        return json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON (line {e.lineno} col {e.colno}): {e.msg}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not valid JSON (not UTF-8 text)") from None
