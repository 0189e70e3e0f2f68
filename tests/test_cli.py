"""The command line: show, register, kernel (network SPEC), catalog list."""
import importlib.util

import numpy as np
import pytest

import dualcalc as dc
from dualcalc.cli import main, parse_net_spec
from dualcalc.errors import ParameterError

HAVE_BACKENDS = importlib.util.find_spec("dualcalc.backends") is not None


@pytest.fixture
def user_catalog(tmp_path, monkeypatch):
    folder = tmp_path / "user-catalog"
    monkeypatch.setenv("DUALCALC_CATALOG_DIR", str(folder))
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- show ------------------------------------------------------------------------------------
def test_show_prints_the_dual(capsys):
    code, out, _ = run(capsys, "show", "relu")
    assert code == 0
    assert "closed-form" in out and "catalog:relu" in out
    assert "k(1, 1, 0.5)" in out


@pytest.mark.skipif(not HAVE_BACKENDS, reason="dualcalc.backends (generated code) has not landed yet")
@pytest.mark.parametrize("target", ["numba", "cuda"])
def test_show_target_prints_generated_source(capsys, target):
    code, out, _ = run(capsys, "show", "gelu", "--target", target, "--depth", "3")
    assert code == 0
    net = dc.serial(dc.Dense(1.0, 0.0), *[layer for _ in range(3) for layer in (dc.activation("gelu"),
                                                                                dc.Dense(1.0, 0.0))])
    assert out.strip() == net.source(target).strip()


@pytest.mark.skipif(HAVE_BACKENDS, reason="only meaningful while the generated backends are absent")
def test_show_target_without_backends_is_a_clear_error(capsys):
    code, _, err = run(capsys, "show", "gelu", "--target", "numba")
    assert code == 2 and "not available" in err


# -- register --------------------------------------------------------------------------------
def test_register_writes_a_valid_toml_that_later_lookups_see(capsys, user_catalog):
    code, out, _ = run(capsys, "register", "scaled_sin", "a*sin(x)", "--param", "a=2.0",
                       "--description", "a sine")
    assert code == 0 and "registered 'scaled_sin'" in out
    path = user_catalog / "scaled_sin.toml"
    from dualcalc.catalog import parse_entry

    entry = parse_entry(path.read_text(), source=path.name)
    assert entry.formula == "a*sin(x)" and entry.parameters == {"a": 2.0} and entry.description == "a sine"
    act = dc.activation("scaled_sin")  # a "later session": found through the user catalog
    assert act.params == {"a": 2.0}
    # E[2 sin u · 2 sin v] = 4 e^{-(q1+q2)/2} sinh(c)
    assert float(act.nngp(1.0, 1.0, 0.5)) == pytest.approx(4 * np.exp(-1.0) * np.sinh(0.5), rel=1e-7)
    code, out, _ = run(capsys, "catalog", "list")
    assert "scaled_sin" in out
    # the same name again needs --force
    with pytest.raises(SystemExit, match="exists"):
        main(["register", "scaled_sin", "sin(x)"])
    assert main(["register", "scaled_sin", "sin(x)", "--force"]) == 0


@pytest.mark.parametrize("formula,params,message", [
    ("a*sin(x)", [], "unknown name 'a'"),
    ("foo(x)", [], "unknown function 'foo'"),
    ("exp(x**2)", [], "E[σ(u)²]"),
    ("x +* 2", [], "cannot parse"),
])
def test_register_refuses_bad_formulas(capsys, user_catalog, formula, params, message):
    code, _, err = run(capsys, "register", "bad", formula, *params)
    assert code == 2 and message in err
    assert not (user_catalog / "bad.toml").exists()


def test_register_refuses_bad_names_and_shadowing(capsys, user_catalog):
    code, _, err = run(capsys, "register", "1bad", "sin(x)")
    assert code == 2 and "name" in err
    with pytest.raises(SystemExit, match="shipped catalog entry"):
        main(["register", "relu", "max(x, 0)"])
    assert not user_catalog.exists() or not list(user_catalog.iterdir())


# -- network SPEC ----------------------------------------------------------------------------
def layers_of(net):
    return [(type(l).__name__, getattr(l, "W_std", None), getattr(l, "b_std", None), getattr(l, "label", None))
            for l in net.layers]


def test_spec_long_and_compact_forms_agree():
    long = parse_net_spec("dense(1.5,0.1)-relu-dense(1.5,0.1)-relu-dense(1.5,0.1)")
    compact = parse_net_spec("relu*2:W=1.5:b=0.1")
    named = parse_net_spec("dense(W=1.5, b=0.1) - relu - dense(W=1.5,b=0.1) - relu - dense(b=0.1,W=1.5)")
    assert layers_of(long) == layers_of(compact) == layers_of(named)
    assert layers_of(parse_net_spec("dense-gelu-dense(2)"))[2][1:3] == (2.0, 0.0)


def test_spec_formulas_and_parameters():
    net = parse_net_spec("dense(1.2)-{a*sin(b*x)}(a=2,b=0.5)-dense-{x*erf(x)}-dense")
    acts = [l for l in net.layers if isinstance(l, dc.Activation)]
    assert acts[0].params == {"a": 2.0, "b": 0.5} and acts[1].formula == "x*erf(x)"
    net = parse_net_spec("{max(x, 0) - 0.5*x}*2:W=1.1")  # '-' and '*' inside braces are the formula's
    assert len(net.layers) == 5


@pytest.mark.parametrize("spec,message", [
    ("", "empty"),
    ("relu*x", "integer"),
    ("relu*0", "between 1 and"),
    ("relu*2*3", "more than one"),
    ("dense(1,2,3)-relu-dense", "at most two"),
    ("dense(W=1,c=2)-relu-dense", "W= and b="),
    ("dense(1,b=2)-relu-dense", "both by position or both by name"),
    ("dense(abc)-relu-dense", "not a number"),
    ("dense(inf)-relu-dense", "finite"),
    ("dense-relu-", "empty layer"),
    ("dense-{x*(x}-dense", "unbalanced"),
    ("dense-(relu-dense", "missing"),
    ("dense-__import__('os')-dense", "neither dense"),
    ("dense-x.__class__-dense", "neither dense"),
    ("relu*2:W=1:q=2", ":W= and :b="),
    ("dense-relu-dense:W=2", "compact form"),
    ("dense-relu(alpha)-dense", "NAME=VALUE"),
])
def test_spec_errors(spec, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_net_spec(spec)


def test_spec_errors_from_the_library_pass_through():
    with pytest.raises(dc.UnknownActivationError):
        parse_net_spec("dense-nosuchact-dense")
    with pytest.raises(dc.FormulaError):
        parse_net_spec("dense-{exec(x)}-dense")
    with pytest.raises(ParameterError, match="raw input"):
        parse_net_spec("relu-dense")


# -- kernel ----------------------------------------------------------------------------------
@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((9, 6)), rng.standard_normal((4, 6))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    return tmp_path, X, Y


def test_kernel_round_trip_matches_the_numpy_backend(capsys, data):
    folder, X, Y = data
    spec = "dense(1.5,0.1)-relu-dense(1.5,0.1)-gelu-dense(1.5,0.1)"
    out = folder / "K.npz"
    code, text, _ = run(capsys, "kernel", "--data", str(folder / "X.npy"), "--data2", str(folder / "Y.npy"),
                        "--net", spec, "--out", str(out), "--backend", "numpy")
    assert code == 0 and "9x4" in text
    ref = parse_net_spec(spec).kernel(X, Y, backend="numpy")
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["nngp"], ref.nngp)
        np.testing.assert_array_equal(z["ntk"], ref.ntk)
        assert str(z["spec"]) == spec
    # default backend (auto: generated code when present, else numpy) and the compact SPEC
    out2 = folder / "K2.npz"
    assert main(["kernel", "--data", str(folder / "X.npy"), "--net", "relu*1:W=1.5:b=0.1", "--out", str(out2),
                 "--get", "ntk"]) == 0
    ref2 = dc.serial(dc.Dense(1.5, 0.1), dc.activation("relu"), dc.Dense(1.5, 0.1)).kernel(X, backend="numpy")
    with np.load(out2, allow_pickle=False) as z:
        assert "nngp" not in z.files
        np.testing.assert_allclose(z["ntk"], ref2.ntk, rtol=1e-10, atol=1e-13)


def test_kernel_validates_its_files(capsys, data, tmp_path):
    folder, X, _ = data
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    np.save(tmp_path / "narrow.npy", np.ones((3, 2)))
    (tmp_path / "X.csv").write_text("1,2\n")
    cases = [
        (["--data", str(tmp_path / "obj.npy")], "not a plain numeric"),
        (["--data", str(tmp_path / "X.csv")], "expected a .npy file"),
        (["--data", str(tmp_path / "missing.npy")], "no such file"),
        (["--data", str(tmp_path / "nan.npy")], "NaN"),
        (["--data", str(folder / "X.npy"), "--data2", str(tmp_path / "narrow.npy")], "features"),
    ]
    for extra, message in cases:
        code, _, err = run(capsys, "kernel", *extra, "--net", "relu*1", "--out", str(tmp_path / "o.npz"),
                           "--backend", "numpy")
        assert code == 2 and message in err, (extra, err)
    code, _, err = run(capsys, "kernel", "--data", str(folder / "X.npy"), "--net", "relu*1",
                       "--out", str(tmp_path / "o.txt"))
    assert code == 2 and ".npz" in err
    assert not (tmp_path / "o.npz").exists()


def test_kernel_help_documents_the_spec(capsys):
    with pytest.raises(SystemExit):
        main(["kernel", "--help"])
    out = capsys.readouterr().out
    assert "relu*3:W=1.5:b=0.1" in out and "dense(1.5,0.1)-relu" in out and "{x*erf(x)}" in out


# -- version ---------------------------------------------------------------------------------
def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"dualcalc {dc.__version__}"


def test_python_dash_m_dualcalc_runs_the_same_command_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dualcalc", "--version"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == f"dualcalc {dc.__version__}"
    from importlib.metadata import version

    assert dc.__version__ == version("dualcalc")  # one version: pyproject reads dualcalc/_version.py
