"""bench/ keeps one copy of its helpers (bench/common.py), every script starts, and bench/README.md
lists every script. Fast: the AST checks read files; the --help check runs every script once in
one child process (torch is imported once), plus the shell wrapper.

Mutants tried: a `def peak_rss_mb()` pasted back into bench/bench_demo.py fails
test_no_helper_is_defined_twice; dropping bench_upsample.py's row from bench/README.md fails
test_readme_lists_every_script; "(issue 9)" put back into bench_sampling.py's verdict fails
test_no_tracker_numbers.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
COMMON = BENCH / "common.py"
SCRIPTS = sorted(p for p in BENCH.rglob("*.py") if p != COMMON)
# Names every script may define for itself: its entry point and the renderer of its own report.
OWN_NAMES = {"main", "markdown"}


def top_level_functions(path: Path) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_every_script_imports_the_shared_module():
    assert SCRIPTS, "no bench scripts found"
    missing = [str(p.relative_to(ROOT)) for p in SCRIPTS if "common" not in imported_modules(p)]
    assert not missing, f"these bench scripts do not import bench/common.py: {missing}"


def test_no_helper_is_defined_twice():
    where = defaultdict(list)
    for path in [COMMON, *SCRIPTS]:
        for name in top_level_functions(path):
            where[name].append(str(path.relative_to(BENCH)))
    twice = {n: files for n, files in where.items() if len(files) > 1 and n not in OWN_NAMES}
    assert not twice, f"defined in more than one bench file (keep one copy in bench/common.py): {twice}"
    shadowed = {n: files for n, files in where.items() if "common.py" in files and len(files) > 1}
    assert not shadowed, f"bench/common.py helpers redefined by a script: {shadowed}"


def test_no_function_body_is_repeated():
    """The same body under another name is a copy too (docstrings aside; 3 statements or more)."""
    seen: dict[str, str] = {}
    copies = []
    for path in [COMMON, *SCRIPTS]:
        for name, fn in top_level_functions(path).items():
            body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
            if len(body) < 3:
                continue
            key = "\n".join(ast.dump(s) for s in body)
            here = f"{path.relative_to(BENCH)}:{name}"
            if key in seen:
                copies.append(f"{seen[key]} == {here}")
            seen.setdefault(key, here)
    assert not copies, copies


HELP_RUNNER = """
import contextlib, io, json, runpy, sys
codes = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
        codes[path] = "returned without exiting"
    except SystemExit as e:
        codes[path] = (e.code or 0) if "usage:" in buf.getvalue() else f"exit {e.code} without usage"
    except Exception as e:
        codes[path] = f"{type(e).__name__}: {e}"
print(json.dumps(codes))
"""


def test_every_script_answers_help():
    with_argparse = [p for p in SCRIPTS if "argparse" in imported_modules(p)]
    others = [p for p in SCRIPTS if p not in with_argparse]
    res = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, *map(str, with_argparse)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    bad = {Path(p).relative_to(ROOT).as_posix(): c for p, c in codes.items() if c != 0}
    assert not bad, bad
    for path in others:  # no command line to ask: it must at least import
        code = f"import runpy; runpy.run_path({str(path)!r}, run_name='bench_import_check')"
        res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{path}: {res.stderr[-2000:]}"
    sh = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert sh.returncode == 0 and "--dry" in sh.stdout, sh.stderr[-2000:]


def test_readme_lists_every_script():
    table = [line for line in (BENCH / "README.md").read_text().splitlines() if line.startswith("|")]
    listed = "\n".join(table)
    paths = [p.relative_to(BENCH).as_posix() for p in SCRIPTS] + ["gpu_check.sh"]
    missing = [p for p in paths if f"`{p}`" not in listed]
    assert not missing, f"bench/README.md's table has no row for: {missing}"


def test_no_tracker_numbers():
    """Reports and docstrings say what a figure is, not which ticket asked for it."""
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in [COMMON, *SCRIPTS]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bissue\s+#?\d+", line, re.I)
    ]
    assert not hits, hits
