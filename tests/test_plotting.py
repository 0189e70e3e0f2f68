"""act.plot(): a matplotlib Figure whose curves are the library's numbers."""
import warnings

import numpy as np
import pytest

import dualcalc as dc

matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib (the notebooks extra)")

from dualcalc.plotting import PLOT_VARIANCES, save_activation_plot  # noqa: E402


def test_plot_returns_a_figure_with_the_dual_curves():
    act = dc.activation("gelu")
    fig = act.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    axs = fig.axes
    assert len(axs) == 4
    # σ
    x, y = axs[0].lines[0].get_data()
    np.testing.assert_allclose(y, act.function(x))
    # k(q, q, ρq) and k̇ at each variance
    assert len(axs[1].lines) == len(axs[2].lines) == len(PLOT_VARIANCES)
    for line, q in zip(axs[1].lines, PLOT_VARIANCES):
        rho, k = line.get_data()
        np.testing.assert_allclose(k, act.nngp(q, q, rho * q), rtol=1e-12)
    for line, q in zip(axs[2].lines, PLOT_VARIANCES):
        rho, t = line.get_data()
        np.testing.assert_allclose(t, act.ntk(q, q, rho * q), rtol=1e-12)
    # Hermite decay, semilog
    assert axs[3].get_yscale() == "log"
    l, r = axs[3].lines[0].get_data()
    np.testing.assert_allclose(r, np.abs(act.hermite(40, 1.0))[l.astype(int)], rtol=1e-12)
    assert "gelu" in fig._suptitle.get_text()


def test_plot_of_a_jump_activation_needs_no_derivative(tmp_path):
    act = dc.activation("sign(x)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the zero-a.e. warning is handled inside
        fig = act.plot(variances=(1.0,), degree=12)
    assert len(fig.axes[2].lines) == 1
    assert np.all(fig.axes[2].lines[0].get_data()[1] == 0.0)
    path = tmp_path / "sign.png"
    save_activation_plot(act, path, variances=(1.0,), degree=12)
    assert path.read_bytes()[:4] == b"\x89PNG"
