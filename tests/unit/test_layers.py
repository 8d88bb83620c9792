"""The package's layers stay true: a contract over the import graph, read from the source (AST).

adm/ is layered bottom up (docs/interfaces.md): fileio/errors -> data -> nets -> features -> diffusion ->
sampling -> training -> programs -> report -> cli. A module may import its own sub-package and
the ones below it, never one above; every import counts, including those inside functions. No
module imports itself back through a cycle. The evaluator (TensorFlow) and adm (PyTorch) never
import each other, and the modules the workflow imports while parsing the config, the report and
the numpy-only programs do not pull in torch.

Mutants tried: `from adm.programs.sample import SampleConfig` inside adm/nets/checkpoints.py fails
the layer test (nets -> programs); the old lazy `from adm.nets.classifier import Classifier` inside
adm/nets/unet.py fails the cycle test; `import torch` at the top of adm/report/table.py fails the
torch-free test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Bottom up: a module may import modules of its own layer or of a lower one.
LAYERS = [
    ("adm.fileio", "adm.errors"),
    ("adm.data",),
    ("adm.nets",),
    ("adm.features",),  # feature networks for metrics (DINOv2): use the nets layer's checkpoint reader
    ("adm.diffusion",),
    ("adm.sampling",),
    ("adm.training",),
    ("adm.programs",),
    ("adm.report",),
    ("adm.cli_help",),
    ("adm.cli", "adm.__main__"),
]
# Imported while Snakemake parses the config, by the report rules, or by `adm merge` /
# `adm prepare-data`: these must stay free of torch at import.
TORCH_FREE = [
    "adm.nets.presets",
    "adm.nets.config",
    "adm.diffusion.schedule",
    "adm.training.presets",
    "adm.training.log",
    "adm.data.datasets",
    "adm.data.ondisk",
    "adm.programs.shards",
    "adm.fileio",
    *[f"adm.report.{p.stem}" for p in (ROOT / "adm/report").glob("*.py") if p.stem != "__init__"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved), at any depth."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return out


def graph(top: str) -> dict[str, set[str]]:
    """{module: the modules of the same tree it imports}, for the existing modules only."""
    files = {module_name(p): p for p in (ROOT / top).rglob("*.py")}
    return {m: {i for i in imports(p) if i in files and i != m} for m, p in files.items()}


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_every_import_points_down():
    wrong = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, deps in graph("adm").items()
        if a != "adm"
        for b in deps
        if b != "adm"
        if layer_of(b) > layer_of(a)
    ]
    assert not wrong, "\n".join(wrong)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("top", ["adm", "evaluations", "bench"])
def test_no_import_cycle(top):
    g = graph(top)
    if top == "bench":  # bench scripts import each other by bare name (sys.path = bench/)
        names = {m.rpartition(".")[2]: m for m in g}
        for m, p in {module_name(p): p for p in (ROOT / top).rglob("*.py")}.items():
            g[m] |= {names[i] for i in imports(p) if i in names}
    assert not cycles(g), cycles(g)


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_torch_and_tensorflow_never_meet():
    for path in (ROOT / "evaluations").rglob("*.py"):
        bad = {i for i in imports(path) if i.split(".")[0] in ("torch", "adm")}
        assert not bad, f"{path}: {bad}"
    for path in (ROOT / "adm").rglob("*.py"):
        bad = {i for i in imports(path) if i.split(".")[0] in ("tensorflow", "evaluations")}
        assert not bad, f"{path}: {bad}"


def test_light_modules_do_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {TORCH_FREE!r}:\n"
        "    importlib.import_module(m)\n"
        "    assert 'torch' not in sys.modules, m\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
