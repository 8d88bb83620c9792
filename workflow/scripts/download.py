# Fetch one released file (checkpoint, reference batch, Inception graph) with
# evaluations.download: locked against concurrent requests, resumable (the .part keyed by URL),
# bounded in time (stall timeout, overall deadline, retries with backoff), kind-checked, sha256
# recorded beside it. Imports neither torch nor tensorflow (except to parse a graph, and torch to
# check a checkpoint's architecture).
#
# params.url: the URL. params.sha256 (optional): the expected sha256 (config's pin; a mismatch is
# refused and nothing is renamed into place). params.cache_dir (optional): download into this
# shared cache, in a folder named by the URL's hash (two URLs with the same file name never share
# a cached file), then link
# (or copy) to the output; without it the file is fetched straight to the output. A second
# output named "lock" receives {"url", "sha256"}: the run's provenance, which the evaluator
# enforces (--graph-lock). params.expect (optional): the file's role, checked cheaply before use
# (headers, keys and shapes only): {"resolution": N} for a reference batch of NxN images,
# {"preset": NAME} for a checkpoint of that network, {"dinov2": True} for DINOv2 ViT-L/14 weights;
# a file that does not fit is deleted.
# Errors end with one line in the log and exit code 1.
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # repo root, also under --use-conda
sys.stderr = open(snakemake.log[0], "w")

from evaluations import atomic  # noqa: E402
from evaluations.download import download  # noqa: E402
from evaluations.errors import EvalError  # noqa: E402
from evaluations.npzio import sha256_file  # noqa: E402


def url_key(url: str) -> str:
    """Cache folder of one URL: a stand-in served under Inception's file name never meets the real one."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def place(src: Path, target: Path) -> None:
    """Hard link the cached file to the output (same file system), else copy it."""
    with atomic.atomic_path(target) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def check_role(path: Path, expect: dict) -> None:
    """A fetched file must fit its role before any job uses it (a 64x64 reference batch or a 64x64
    network would otherwise fail only after the expensive stages)."""
    if "resolution" in expect:
        from evaluations.reference import check_reference_batch

        check_reference_batch(path, expect["resolution"])
    if "preset" in expect:
        from adm.nets.checkpoints import check_architecture

        check_architecture(path, expect["preset"])
    if expect.get("dinov2"):
        from adm.features.dinov2 import check_weights

        check_weights(path)


def discard(path: Path) -> None:
    """Delete a fetched file that is not what its rule needs, and its recorded sha256."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def main() -> int:
    target = Path(snakemake.output[0])
    url = snakemake.params.url
    cache_dir = getattr(snakemake.params, "cache_dir", None)
    expected = getattr(snakemake.params, "sha256", None) or None
    expect = getattr(snakemake.params, "expect", None) or {}
    try:
        if cache_dir:
            folder = Path(os.path.expanduser(cache_dir)) / url_key(url)
            fetched = download(url, cache_dir=folder, expected_sha256=expected)
        else:
            fetched = download(url, cache_dir=target.parent, filename=target.name, expected_sha256=expected)
        try:
            check_role(fetched, expect)
        except (EvalError, ValueError) as exc:  # CheckpointError is a ValueError
            discard(fetched)
            print(f"error: {exc} (from {url}); deleted the download, nothing was kept", file=sys.stderr)
            return 1
        if cache_dir:
            place(fetched, target)
        if "lock" in snakemake.output.keys():
            atomic.write_text(
                snakemake.output.lock,
                json.dumps({"url": url, "sha256": sha256_file(target), "file": target.name}, indent=1) + "\n",
            )
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


sys.exit(main())
