"""`dualcalc catalog build`: report, verification numbers, cache, broken user entries."""
import json
import os

import pytest

import dualcalc as dc
import dualcalc.build as build
from dualcalc.catalog import builtin_entries
from dualcalc.cli import main
from dualcalc.verify import verify_activation


@pytest.fixture(autouse=True)
def fixed_fingerprint(monkeypatch):
    """Colleagues edit the library while tests run; pin the cache key's library part."""
    monkeypatch.setattr(build, "library_fingerprint", lambda: "fingerprint-for-tests")


@pytest.fixture
def user_catalog(tmp_path, monkeypatch):
    folder = tmp_path / "user-catalog"
    folder.mkdir()
    monkeypatch.setenv("DUALCALC_CATALOG_DIR", str(folder))
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_subset_report_and_cache(capsys, tmp_path, user_catalog):
    out = tmp_path / "out"
    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--only", "relu", "gelu", "--no-progress")
    assert code == 0, text
    assert "2 of 2 entries built and verified" in text and "0 of 2 served from cache" in text
    for f in ("report.md", "report.json", "manifest.json", "png/relu.png", "png/gelu.png"):
        assert (out / f).is_file(), f
    assert (out / "png/relu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    recs = {r["name"]: r for r in report["records"]}
    assert set(recs) == {"relu", "gelu"}
    for name, rec in recs.items():
        assert rec["status"] == "ok" and rec["verified"] is True
        assert rec["method"] == "closed-form" and rec["rule"] == f"catalog:{name}"
        assert rec["derive_s"] >= 0 and rec["verify_s"] >= 0
        assert set(rec["compile"]) == {"numba", "cuda"}
        # the report's numbers are what the oracle measures
        v = verify_activation(dc.activation(name))
        assert rec["accuracy"]["nngp"] == pytest.approx(v.nngp_error, rel=1e-6, abs=1e-15)
        assert rec["accuracy"]["ntk"] == pytest.approx(v.ntk_error, rel=1e-6, abs=1e-15)
        assert rec["accuracy"]["nngp"] < 1e-12
    md = (out / "report.md").read_text()
    assert "| `relu` | closed-form |" in md and "![gelu](png/gelu.png)" in md

    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--only", "relu", "gelu", "--no-progress")
    assert code == 0 and "2 of 2 served from cache" in text
    assert "cached" in text
    assert json.loads((out / "report.json").read_text())["cached"] == 2
    # a changed entry (here: the library) is rebuilt; --force rebuilds everything
    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--only", "relu", "--force", "--no-progress")
    assert code == 0 and "0 of 1 served from cache" in text


BROKEN = {
    "badtoml.toml": 'name = "badtoml"\nformula = "sin(x)\n',
    "unknownfn.toml": 'name = "unknownfn"\nformula = "foo(x)"\n',
    "divergent.toml": 'name = "divergent"\nformula = "exp(x**2)"\n',
    "missingparam.toml": 'name = "missingparam"\nformula = "a*sin(x)"\n',
    "badkey.toml": 'name = "badkey"\nformula = "sin(x)"\ncolour = "red"\n',
}


def test_broken_user_entries_fail_alone(capsys, tmp_path, user_catalog):
    for fname, text in BROKEN.items():
        (user_catalog / fname).write_text(text)
    (user_catalog / "mysin.toml").write_text('name = "mysin"\nformula = "a*sin(x)"\n[parameters]\na = 1.5\n')
    out = tmp_path / "out"
    names = ["relu", "mysin", "unknownfn", "divergent", "missingparam", "badtoml", "badkey"]
    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--only", *names, "--no-progress",
                        "--target", "numba")
    assert code == 1
    lines = text.splitlines()

    def line(word):
        hits = [l for l in lines if word in l]
        assert len(hits) == 1, (word, text)
        return hits[0]

    assert line("badtoml.toml").startswith("FAILED") and "invalid TOML" in line("badtoml.toml")
    assert "unknown key" in line("badkey.toml")
    assert line("unknownfn:").startswith("FAILED") and "unknown function 'foo'" in line("unknownfn:")
    assert "DivergentError" in line("divergent:") and "E[σ(u)²]" in line("divergent:")
    assert "unknown name 'a'" in line("missingparam:") and "needs a value" in line("missingparam:")
    assert line("relu ").startswith("ok") and line("mysin ").startswith("ok")
    assert "2 of 5 entries built and verified, 5 failed" in text
    report = json.loads((out / "report.json").read_text())
    recs = {r["name"]: r for r in report["records"]}
    assert recs["mysin"]["status"] == "ok" and recs["mysin"]["origin"] == "user"
    assert recs["mysin"]["method"] in ("closed-form", "hermite") and recs["mysin"]["verified"]
    assert recs["divergent"]["status"] == "failed" and recs["divergent"]["errors"][0].startswith("derive:")
    assert {e["file"].split("/")[-1] for e in report["file_errors"]} == {"badtoml.toml", "badkey.toml"}
    md = (out / "report.md").read_text()
    assert "## Errors" in md and "`divergent`" in md and "badtoml.toml" in md
    assert (out / "png/mysin.png").is_file() and not (out / "png/divergent.png").exists()

    # second run: the good entries come from the cache, the broken ones fail again
    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--only", *names, "--no-progress",
                        "--target", "numba")
    assert code == 1 and "2 of 5 served from cache" in text


def test_a_wrong_closed_form_fails_verification(capsys, tmp_path, user_catalog):
    (user_catalog / "wrongrelu.toml").write_text(
        'name = "wrongrelu"\nformula = "max(x, 0)"\n[dual]\n'
        'nngp = "sqrt(q1*q2)/(2*pi)*(sqrt(1 - rho**2) + (pi - acos(rho))*rho) * 1.01"\n')
    code, text, _ = run(capsys, "catalog", "build", "--out", str(tmp_path / "o"), "--only", "wrongrelu",
                        "--no-progress", "--no-plots")
    assert code == 1
    assert "FAILED  wrongrelu: verify: dual disagrees with the quadrature oracle" in text


def test_only_unknown_name_is_an_error(capsys, tmp_path):
    code, _, err = run(capsys, "catalog", "build", "--out", str(tmp_path), "--only", "nosuch")
    assert code == 2 and "not in the catalog" in err


def test_jobs_two_matches_jobs_one(capsys, tmp_path, user_catalog):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["catalog", "build", "--out", str(a), "--only", "relu", "gelu", "--no-plots", "--no-progress"]) == 0
    assert main(["catalog", "build", "--out", str(b), "--only", "relu", "gelu", "--no-plots", "--no-progress",
                 "--jobs", "2"]) == 0
    capsys.readouterr()
    ra = {r["name"]: r["accuracy"] for r in json.loads((a / "report.json").read_text())["records"]}
    rb = {r["name"]: r["accuracy"] for r in json.loads((b / "report.json").read_text())["records"]}
    assert ra == rb


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DUALCALC_RUN_SLOW"),
                    reason="whole-catalog build (minutes cold); set DUALCALC_RUN_SLOW=1 to run it")
def test_whole_shipped_catalog_builds_and_verifies(capsys, tmp_path, user_catalog):
    out = tmp_path / "all"
    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--jobs", "2", "--no-progress")
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert {r["name"] for r in report["records"]} == set(builtin_entries())
    assert all(r["verified"] for r in report["records"])


def test_cuda_compiler_missing(capsys, tmp_path, user_catalog, monkeypatch):
    """--target cuda without NVRTC is one clear error; --target all reports the CUDA step as skipped."""
    monkeypatch.setattr(build, "cuda_compiler", lambda: (None, "NVRTC is not available (test)"))
    code, _, err = run(capsys, "catalog", "build", "--out", str(tmp_path / "c"), "--only", "relu", "--target", "cuda")
    assert code == 2 and "--target cuda: NVRTC is not available (test)" in err
    code, text, _ = run(capsys, "catalog", "build", "--out", str(tmp_path / "a"), "--only", "relu", "--no-plots",
                        "--no-progress")
    assert code == 0, text
    rec = json.loads((tmp_path / "a" / "report.json").read_text())["records"][0]
    assert rec["compile"]["cuda"] == {"status": "skipped", "reason": "NVRTC is not available (test)"}
    assert "## Skipped steps" in (tmp_path / "a" / "report.md").read_text()


def test_without_matplotlib_the_build_skips_the_plots_with_a_note(capsys, tmp_path, user_catalog, monkeypatch):
    """matplotlib is the ``plots`` extra: a lean install still builds, and says the PNGs were skipped."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "lean"
    code, text, _ = run(capsys, "catalog", "build", "--out", str(out), "--only", "relu", "--target", "numba",
                        "--no-progress")
    assert code == 0, text
    assert "plots skipped: matplotlib is not installed" in text and "dualcalc[plots]" in text
    assert not (out / "png").exists()
    assert json.loads((out / "report.json").read_text())["records"][0]["verified"] is True


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    import builtins

    from dualcalc.errors import BackendError

    real = builtins.__import__

    def no_matplotlib(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(BackendError, match=r"dualcalc\[plots\]"):
        dc.activation("relu").plot()
