"""What the report says about the run itself: commit, versions, hardware, wall time per rule."""

from __future__ import annotations

import csv
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

# Distributions whose versions matter for the numbers (read from metadata: nothing is imported).
PACKAGES = (
    "adm-bench",
    "torch",
    "tensorflow-cpu",
    "tensorflow",
    "numpy",
    "scipy",
    "snakemake",
    "snakemake-executor-plugin-slurm",
    "matplotlib",
    "pillow",
)


def git_commit(repo: str | Path) -> str:
    """`<sha>` plus ` (dirty)` when the tree has changes; 'unknown' outside git or before the first commit."""

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown (no commit yet)"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + (" (dirty)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(names=PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def hardware() -> dict[str, str]:
    """CPU model and count, memory, and GPUs from nvidia-smi when present."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        info["memory"] = f"{mem_kb / 2**20:.1f} GiB"
    except (OSError, AttributeError):
        pass
    if shutil.which("nvidia-smi"):
        res = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if res.returncode == 0 and res.stdout.strip():
            info["gpus"] = "; ".join(res.stdout.strip().splitlines())
    return info


def read_benchmarks(bench_dir: str | Path) -> dict[str, dict[str, float]]:
    """Sum snakemake benchmark TSVs per rule: {rule: {"jobs", "wall_s", "max_rss_mb"}}.

    Layout: `<bench_dir>/<rule>.tsv` or `<bench_dir>/<rule>/<job>.tsv`.
    """
    bench_dir = Path(bench_dir)
    out: dict[str, dict[str, float]] = {}
    for path in sorted(bench_dir.rglob("*.tsv")) if bench_dir.is_dir() else []:
        rel = path.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        with open(path) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows:
            continue
        entry = out.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "max_rss_mb": 0.0, "start": float("inf"), "end": 0.0})
        # a benchmark file is written when its job ends: start = end - duration
        end = path.stat().st_mtime
        entry["end"] = max(entry["end"], end)
        entry["start"] = min(entry["start"], end - float(rows[-1].get("s") or 0.0))
        entry["jobs"] += 1
        entry["wall_s"] += float(rows[-1].get("s") or 0.0)
        try:
            entry["max_rss_mb"] = max(entry["max_rss_mb"], float(rows[-1].get("max_rss") or 0.0))
        except ValueError:  # "-" when not measured
            pass
    return out


def elapsed_seconds(benchmarks: dict[str, dict[str, float]]) -> float:
    """Wall-clock span from the first benchmarked job's start to the last one's end."""
    if not benchmarks:
        return 0.0
    return max(b["end"] for b in benchmarks.values()) - min(b["start"] for b in benchmarks.values())


def gpu_hours(benchmarks: dict[str, dict[str, float]], gpus_per_rule: dict[str, int]) -> float:
    """Wall time × GPUs requested, summed over rules (only meaningful when the run used GPUs)."""
    return sum(b["wall_s"] * gpus_per_rule.get(rule, 0) for rule, b in benchmarks.items()) / 3600.0


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def config_yaml(config: dict) -> str:
    """The resolved config as YAML, keys in the order the config has them, with a header that
    says what it is. Loading it back gives the same dict; `--configfile` of it reruns the same DAG."""
    import yaml

    header = (
        "# The resolved config of this run: the config file(s) given, the command line's\n"
        "# overrides and the schema's defaults. `snakemake --configfile <this file>` runs it again.\n"
    )
    return header + yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)


def _plain(value):
    """Snakemake's config nodes as plain dicts and lists (safe_dump refuses subclasses)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
