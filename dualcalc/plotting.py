r"""Plots of an activation and its dual (matplotlib; needs the ``plots`` extra).

>>> import dualcalc as dc
>>> fig = dc.activation("gelu").plot()        # a matplotlib Figure
>>> fig.savefig("gelu.png")

Four panels: σ(x); the NNGP dual k(q, q, ρq) against ρ at q ∈ {0.5, 1, 2}; the
derivative dual k̇(q, q, ρq); and the decay of the normalised Hermite
coefficients |r_l(1)| (semilog).  Figures are built with
:class:`matplotlib.figure.Figure`, not pyplot, so they work in worker
processes and headless builds; in Jupyter (after ``import matplotlib.pyplot``)
they display like any other figure.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .errors import BackendError, ParameterError

#: variances of the k(ρ) and k̇(ρ) panels
PLOT_VARIANCES = (0.5, 1.0, 2.0)


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise BackendError("plots need matplotlib, which dualcalc does not install by default: "
                           "pip install 'dualcalc[plots]' (or matplotlib)") from None
    return Figure


def plot_activation(act, *, variances: Sequence[float] = PLOT_VARIANCES, degree: int = 40,
                    x_range: tuple[float, float] = (-4.0, 4.0), n_rho: int = 201, figsize=(10.0, 7.0)):
    """σ, k(ρ), k̇(ρ) at a few variances and the Hermite coefficient decay of ``act``.

    ``act`` is an :class:`~dualcalc.activation.Activation` (``dc.activation(name)`` makes one
    from a name or formula).  Returns the :class:`matplotlib.figure.Figure`.
    """
    if not (hasattr(act, "dual") and hasattr(act, "function")):
        raise ParameterError(f"plot_activation takes an Activation (dc.activation(...)), got {act!r}")
    with warnings.catch_warnings():  # accuracy notes of Hermite duals belong to act.dual, not the plot
        warnings.simplefilter("ignore", RuntimeWarning)
        return _plot(act, variances, degree, x_range, n_rho, figsize)


def _plot(act, variances, degree, x_range, n_rho, figsize):
    Figure = _figure_class()
    fig = Figure(figsize=figsize)  # fixed margins: a layout engine would double the render time
    axs = fig.subplots(2, 2, gridspec_kw=dict(left=0.07, right=0.98, bottom=0.07, top=0.9, wspace=0.2, hspace=0.38))
    dual = act.dual

    # σ(x)
    ax = axs[0, 0]
    t = np.linspace(*x_range, 801)
    y = act.function(t)
    ax.plot(t, y, color="C0")
    ax.axhline(0.0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0.0, color="0.8", lw=0.8, zorder=0)
    ax.set_title(f"σ(x) = {act.formula}" if len(act.formula) <= 40 else "σ(x)")
    ax.set_xlabel("x")

    rho = np.linspace(-1.0, 1.0, n_rho)
    qv = np.asarray(variances, dtype=np.float64)[:, None] * np.ones_like(rho)[None, :]
    K = act.nngp(qv, qv, rho[None, :] * qv)  # one call each: a Hermite dual builds its tables once
    T = act.ntk(qv, qv, rho[None, :] * qv)
    for i, q in enumerate(variances):
        axs[0, 1].plot(rho, K[i], color=f"C{i}", label=f"q = {q:g}")
        axs[1, 0].plot(rho, T[i], color=f"C{i}", label=f"q = {q:g}")
    axs[0, 1].set_title("NNGP dual k(q, q, ρq) = E[σ(u)σ(v)]")
    axs[1, 0].set_title("derivative dual k̇(q, q, ρq) = E[σ'(u)σ'(v)]")
    if dual.ntk_convention == "zero-a.e.":
        axs[1, 0].text(0.5, 0.5, "σ' is a delta: k̇ taken as 0", transform=axs[1, 0].transAxes,
                       ha="center", va="center", color="0.4")
    for ax in (axs[0, 1], axs[1, 0]):
        ax.set_xlabel("ρ = c / q")
        ax.legend(loc="best", fontsize="small")

    # Hermite coefficient decay at unit variance
    ax = axs[1, 1]
    r = np.abs(act.hermite(degree, 1.0))
    l = np.arange(r.size)
    nz = r > max(float(r.max(initial=0.0)) * 1e-14, 1e-300)  # zero up to round-off: not drawn
    ax.semilogy(l[nz], r[nz], "o", ms=3.5, color="C3")
    ax.set_title("Hermite coefficients |r_l(1)|")
    ax.set_xlabel("l")
    ax.grid(True, which="major", alpha=0.3)

    how = dual.method if dual.method != "hermite" else f"hermite, degree {dual.degree}"
    fig.suptitle(f"{act.label}  ({how}; rule {dual.rule})")
    return fig


def save_activation_plot(act, path, *, dpi: int = 90, **kwargs) -> None:
    """Render :func:`plot_activation` to a PNG file, written atomically."""
    import io

    from .fileio import atomic_write_bytes

    fig = plot_activation(act, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
