"""One way to warn: at the user's line, once per distinct cause.

``warn(message, category, key=...)`` walks the stack to the first frame outside dualcalc
and codegen (so the warning names the line of the user's script or notebook, whatever the
depth of the call inside the library), and shows each ``key`` once per process: a kernel
computed in a loop warns on its first call, not on every call. The message itself should
say what happened, what it means for the result, and what to do.
"""
from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

_OURS = tuple(str(Path(__file__).resolve().parent.parent / pkg) for pkg in ("dualcalc", "codegen"))
_SEEN: set = set()
_LOCK = threading.Lock()


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside dualcalc/codegen, counted from the
    caller of this function's caller (what ``warnings.warn`` expects when called here)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_OURS):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning, *, key=None) -> None:
    """Warn at the user's line; a given ``key`` (default: the message) is shown once."""
    key = message if key is None else key
    with _LOCK:
        if key in _SEEN:
            return
        _SEEN.add(key)
    warnings.warn(message, category, stacklevel=user_stacklevel())


def reset() -> None:
    """Forget which warnings were shown (for tests)."""
    with _LOCK:
        _SEEN.clear()
