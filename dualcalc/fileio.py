"""Files: the one cache folder of dualcalc, and atomic writes (a reader sees the old file or
the new one, never half of one).  A leaf module: it imports nothing of dualcalc, so every
layer (the dual cache, the code generators, the build) may use it."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder, joined with ``parts`` (e.g. ``cache_dir("duals")``).

    ``$DUALCALC_CACHE_DIR`` when set (``~`` expanded); else the platform's user cache folder:
    ``$XDG_CACHE_HOME/dualcalc`` or ``~/.cache/dualcalc`` on Linux, ``~/Library/Caches/dualcalc``
    on macOS, ``%LOCALAPPDATA%\\dualcalc\\Cache`` on Windows.  Read on every call, so a changed
    environment variable takes effect at once.
    """
    env = os.environ.get("DUALCALC_CACHE_DIR")
    if env:
        base = Path(env).expanduser()
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "dualcalc" / "Cache"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "dualcalc"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dualcalc"
    return base.joinpath(*parts)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
