"""The README is runnable: its ```python blocks run as written, in order, in one fresh interpreter.

A block that cannot run in a test (it would need a GPU, or the user's own data) must say so on its
first line, ``# not run by tests: <why>``, and is skipped here; every other block must run, in a
fresh interpreter whose working folder is a temporary one (files the blocks write go there).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP_MARK = "# not run by tests:"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_has_python_blocks_and_no_hidden_ones():
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 3
    # every block opened as python is found (a typo such as ```pyhton would hide one)
    assert len(blocks) == text.count("```python\n")


def test_readme_python_blocks_run_in_order(tmp_path):
    blocks = [b for b in python_blocks(README.read_text(encoding="utf-8")) if not b.startswith(SKIP_MARK)]
    script = "\n".join(f"print('--- README block {i + 1}', flush=True)\n{b}" for i, b in enumerate(blocks))
    (tmp_path / "readme_blocks.py").write_text(script, encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg")  # the conftest's isolated catalog and caches are inherited
    proc = subprocess.run([sys.executable, "readme_blocks.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert f"--- README block {len(blocks)}" in proc.stdout
