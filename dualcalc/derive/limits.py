"""Time limits for symbolic work.

A symbolic attempt runs under a :func:`deadline`.  Two mechanisms bound it:

* cooperative checks: the rule modules call :func:`check` between steps (pairs of
  terms, recursion levels); past the deadline it raises :class:`DerivationTimeout`;
* on the main thread, a ``SIGALRM`` interval timer (``signal.setitimer``) raises the
  same exception inside long SymPy calls that never reach a cooperative check.
  Signals only work on the main thread; elsewhere the cooperative checks alone
  bound the work.  A timer already armed by someone else (e.g. pytest-timeout)
  is restored afterwards, with the time spent taken off.

:class:`DerivationTimeout` derives from ``BaseException`` so that the broad
``except Exception`` clauses inside SymPy cannot swallow it.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

_state = threading.local()


class DerivationTimeout(BaseException):
    """A symbolic attempt ran past its time limit (internal; the engine falls back)."""


def remaining() -> float:
    """Seconds left before the current deadline (inf when none is set)."""
    end = getattr(_state, "end", None)
    return float("inf") if end is None else end - time.monotonic()


def check() -> None:
    """Raise :class:`DerivationTimeout` when the current deadline has passed."""
    end = getattr(_state, "end", None)
    if end is not None and time.monotonic() > end:
        raise DerivationTimeout()


def _on_alarm(signum, frame):  # pragma: no cover - timing dependent
    if getattr(_state, "end", None) is not None:
        raise DerivationTimeout()


@contextmanager
def deadline(seconds: float | None):
    """Run the body with a time limit of ``seconds`` (``None`` or ``inf``: no limit).

    Nested deadlines keep the earlier end.
    """
    if seconds is None or seconds == float("inf"):
        yield
        return
    if seconds <= 0:
        raise ValueError(f"timeout must be positive, got {seconds}")
    outer = getattr(_state, "end", None)
    end = time.monotonic() + float(seconds)
    if outer is not None:
        end = min(end, outer)
    _state.end = end
    use_signal = (outer is None and threading.current_thread() is threading.main_thread()
                  and hasattr(signal, "setitimer"))
    old_handler = None
    old_timer = (0.0, 0.0)
    started = time.monotonic()
    if use_signal:
        try:
            old_timer = signal.getitimer(signal.ITIMER_REAL)
            if old_timer[0] and old_timer[0] < seconds:
                use_signal = False  # someone else's alarm comes first: leave it alone
            else:
                old_handler = signal.signal(signal.SIGALRM, _on_alarm)
                signal.setitimer(signal.ITIMER_REAL, max(end - time.monotonic(), 1e-3))
        except (ValueError, OSError):  # pragma: no cover - exotic embeddings
            use_signal = False
    try:
        yield
    finally:
        _state.end = outer  # first: disarms the handler against a late alarm
        if use_signal:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
            if old_timer[0]:
                left = max(old_timer[0] - (time.monotonic() - started), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, left, old_timer[1])
