"""Test isolation: the suite never reads or writes the user's own dualcalc state.

Set at import, before any test module imports dualcalc: the user catalog
(``$DUALCALC_CATALOG_DIR``, ``$XDG_CONFIG_HOME``), the dual and code caches
(``$DUALCALC_CACHE_DIR``, ``$XDG_CACHE_HOME``) and Numba's cache all point into one
temporary folder made for this run, removed at its end. Whatever the user registered
(``dualcalc register ...``) or cached cannot change a result.

``DUALCALC_TEST_CACHE_DIR=folder`` reuses one cache folder across runs (faster local
reruns: compiled kernels are served from it); it is still never the user's own cache.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="dualcalc-tests-"))
_CACHE = Path(os.environ.get("DUALCALC_TEST_CACHE_DIR") or _ROOT / "cache")

os.environ["XDG_CONFIG_HOME"] = str(_ROOT / "config")
os.environ["DUALCALC_CATALOG_DIR"] = str(_ROOT / "config" / "dualcalc" / "catalog")
os.environ["XDG_CACHE_HOME"] = str(_ROOT / "xdg-cache")
os.environ["DUALCALC_CACHE_DIR"] = str(_CACHE)
os.environ["NUMBA_CACHE_DIR"] = str(_CACHE / "numba")


def pytest_unconfigure(config):  # noqa: ARG001 - pytest hook signature
    shutil.rmtree(_ROOT, ignore_errors=True)


import pytest  # noqa: E402 - after the environment above is set


@pytest.fixture(autouse=True)
def _warnings_shown_afresh():
    """dualcalc shows each warning once per process; every test starts as a fresh process would."""
    from dualcalc import warn

    warn.reset()


@pytest.fixture(scope="session")
def neural_tangents():
    """The neural-tangents package in float64 (JAX x64 on), or a skip saying how to install it."""
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import jax

        jax.config.update("jax_enable_x64", True)
        import neural_tangents
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        pytest.skip(f"neural-tangents is not importable ({type(err).__name__}: {err}); "
                    "pip install 'dualcalc[bench]' to run these comparisons")
    return neural_tangents
