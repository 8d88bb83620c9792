"""The report speaks plainly: Table 1's note and the Snakemake report captions say what
the brackets are — a 95 % bootstrap interval, what is resampled, how many times — and show no
internal field name such as the metrics JSON's `ci`.

Mutants tried: the old note "Brackets: confidence interval from the evaluator's `ci` field."
(test_table_note_names_the_intervals); `max(c, 200)` dropped from the note
(…names_the_intervals: "200 resamples" missing); the caption's `| max` filter dropped
(test_captions_render_and_name_the_intervals).
"""

from __future__ import annotations

import re

import jinja2
import pytest
from test_workflow import ROOT

from adm.report.table import notes

CAPTIONS = sorted((ROOT / "workflow" / "report").glob("*.rst"))
# Names of the metrics JSON and the config that a reader should never meet in prose.
INTERNAL = re.compile(r"`ci`|\bci\b|\bsettings\b|n_samples|graph_sha256|cache_hits|evaluation\.bootstrap")


def results(bootstrap: int) -> dict[float, dict]:
    doc = {"metrics": {}, "ci": {}, "label": None, "settings": {"bootstrap": bootstrap}}
    return {0.0: doc, 1.0: doc}


@pytest.mark.parametrize(
    "bootstrap,fid,pr", [(10, "10 resamples", "200 resamples"), (500, "500 resamples", "500 resamples")]
)
def test_table_note_names_the_intervals(bootstrap, fid, pr):
    line = notes(results(bootstrap), compare_paper=False)[-1]
    assert line.startswith("Brackets: 95% bootstrap intervals"), line
    assert f"FID, sFID and IS: {fid}" in line and f"precision and recall: {pr}" in line
    assert "generated images" in line and "reference batch held fixed" in line
    assert not INTERNAL.search(line), line


def test_table_note_without_intervals():
    assert notes(results(0), compare_paper=False)[-1].startswith("No intervals")


@pytest.mark.parametrize("path", CAPTIONS, ids=[p.name for p in CAPTIONS])
def test_captions_render_and_name_the_intervals(path):
    """Rendered as Snakemake renders captions (Jinja2, `snakemake` in the context)."""

    class Job:
        config = {"sampling": {"num_samples": 500}, "evaluation": {"bootstrap": 10}}
        wildcards = {"scale": "1"}

    text = " ".join(jinja2.Template(path.read_text()).render(snakemake=Job).split())
    assert "{{" not in text and not INTERNAL.search(text), text
    if path.name in ("table1.rst", "plots.rst"):
        assert "95 % bootstrap" in text and "10 times" in text, text
        assert re.search(r"\b200 (resamples|for precision and recall)", text), text
