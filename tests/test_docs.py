"""The project carries its own documentation: nothing in it points at a file it does not contain."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("README.md", "docs", "dualcalc", "codegen", "catalog", "benchmarks", "notebooks", "tests")
SUFFIXES = {".md", ".py", ".toml", ".ipynb"}
# docs/<name>.md anywhere (docstrings, generated-code headers, comments), and markdown links
DOC_MENTION = re.compile(r"\bdocs/[\w./-]+\.(?:md|png|svg)")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def project_files():
    """The project's files: git's list where this is a checkout (untracked drafts are not the project)."""
    import subprocess

    try:
        listed = subprocess.run(["git", "ls-files", *SCANNED], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = None
    if listed:
        yield from (ROOT / f for f in listed if Path(f).suffix in SUFFIXES and (ROOT / f).is_file())
        return
    for name in SCANNED:
        p = ROOT / name
        yield from ([p] if p.is_file() else (f for f in sorted(p.rglob("*")) if f.suffix in SUFFIXES
                                             and f.is_file() and "__pycache__" not in f.parts))


def test_every_mentioned_doc_file_exists():
    missing = []
    for f in project_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        for m in DOC_MENTION.findall(text):
            if not (ROOT / m).exists():
                missing.append(f"{f.relative_to(ROOT)}: {m}")
        if f.suffix == ".md":
            for link in MD_LINK.findall(text):
                if "://" in link or link.startswith("mailto:"):
                    continue
                if not (f.parent / link).exists():
                    missing.append(f"{f.relative_to(ROOT)}: ({link})")
    assert not missing, "references to files the project does not contain:\n" + "\n".join(missing)


def test_no_reference_to_the_team_notes_outside_the_repository():
    bad = [str(f.relative_to(ROOT)) for f in project_files()
           if re.search(r"\b(?:MATH|ARCHITECTURE|PEERS)\.md\b|shared/design", f.read_text(errors="replace"))
           and f.name != "test_docs.py"]
    assert not bad, bad


def test_the_docs_cover_what_the_issue_asks():
    math = (ROOT / "docs" / "math.md").read_text(encoding="utf-8")
    for topic in ("Hermite", "error", "Dense", "Conv", "sketch", "References"):
        assert topic.lower() in math.lower(), topic
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for topic in ("Adding an activation", "Adding a derivation rule", "Adding a layer", "code-generation target"):
        assert topic in arch, topic
