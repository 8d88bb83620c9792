"""The published-samples check: which of OpenAI's released sample batches to evaluate, where they
and their reference batches come from, and what they are compared with (adm.report.published)."""

from __future__ import annotations

import posixpath

from adm.report.published import BASE_URL, CATALOGUE, DEFAULT_BATCHES
from workflow.lib.paths import is_imagenet, out


def settings(config: dict) -> dict:
    """config['published'] with the defaults filled in (the section is optional)."""
    given = config.get("published") or {}
    return {
        "batches": list(given.get("batches", DEFAULT_BATCHES)),
        "base_url": given.get("base_url", BASE_URL),
        "sha256": dict(given.get("sha256") or {}),
        "expected": dict(given.get("expected") or {}),
        "fail_on_mismatch": given.get("fail_on_mismatch", True),
        "in_report": given.get("in_report", False),
    }


def in_report(config: dict) -> bool:
    """published.in_report on an ImageNet run: the check is part of the default run and its table a
    section of report.html (otherwise it runs only as the named target `published`)."""
    return is_imagenet(config) and bool(settings(config)["in_report"])


def reference_key(batch: str) -> str:
    """File stem of a batch's reference batch, e.g. VIRTUAL_imagenet128_labeled."""
    return posixpath.splitext(posixpath.basename(CATALOGUE[batch].reference))[0]


def batch_url(config: dict, batch: str) -> str:
    return settings(config)["base_url"] + CATALOGUE[batch].file


def reference_url(config: dict, key: str) -> str:
    name = next(b.reference for b in CATALOGUE.values() if reference_key_of(b.reference) == key)
    return settings(config)["base_url"] + name


def reference_key_of(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def sha256(config: dict, name: str) -> str | None:
    """The pinned sha256 of a batch or reference file (by batch name or reference stem), or None."""
    return settings(config)["sha256"].get(name)


def reference_path(config: dict, wildcards) -> str:
    return out(config, f"published/reference/{reference_key(wildcards.batch)}.npz")


def metrics_files(config: dict) -> list[str]:
    return [out(config, f"published/metrics/{b}.json") for b in settings(config)["batches"]]


def batch_files(config: dict) -> list[str]:
    return [out(config, f"published/batches/{b}.npz") for b in settings(config)["batches"]]


def dinov2_reference_path(config: dict, wildcards) -> str:
    """DINOv2 features of a batch's reference batch (the feature cache makes a reference already
    featurised for the sweep, same bytes, cost nothing)."""
    return out(config, f"published/dinov2/reference/{reference_key(wildcards.batch)}.npz")


def fd_dinov2_files(config: dict) -> list[str]:
    """Each batch's FD_DINOv2 record, read by the table (none when evaluation.fd_dinov2 is off)."""
    if not config["evaluation"]["fd_dinov2"]:
        return []
    return [out(config, f"published/fd_dinov2/{b}.json") for b in settings(config)["batches"]]


def report_inputs(config: dict, wildcards=None) -> dict:
    """report_html's extra input: published.csv when published.in_report (nothing otherwise, so a run
    that did not ask for the check never downloads the published batches)."""
    return {"published_csv": out(config, "published.csv")} if in_report(config) else {}


def targets(config: dict) -> list[str]:
    """The check's files in `rule all` when it is in the report (a deleted batch is fetched again)."""
    if not in_report(config):
        return []
    return [out(config, "published.md"), out(config, "published.csv"), *batch_files(config)]
