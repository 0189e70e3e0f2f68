"""Warnings point at the user's line and are shown once per cause (dualcalc/warn.py)."""
import warnings

import numpy as np
import pytest

import dualcalc as dc
from dualcalc import warn as W


@pytest.fixture(autouse=True)
def _fresh():
    W.reset()
    yield
    W.reset()


def test_delta_derivative_warning_names_this_file_and_is_shown_once():
    step = dc.activation("step")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            step.ntk(np.ones(4), np.ones(4), 0.5 * np.ones(4))
    ours = [w for w in rec if "delta" in str(w.message)]
    assert len(ours) == 1
    assert ours[0].filename == __file__
    assert "price_ntk" in str(ours[0].message)  # says what to do


def test_warning_from_a_deep_call_points_past_the_library():
    def deep():  # stands in for library code: its own frames are skipped by file, not by depth
        W.warn("something to say", RuntimeWarning, key="k")

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        deep()
        deep()
    assert len(rec) == 1 and rec[0].filename == __file__
