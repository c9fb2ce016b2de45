"""The report's sections: what each one shows, computed from a run directory.

Sections follow the paper's analyses (Borkar et al. 2026), in this order (:data:`TITLES`):
rates, T/B/S overlaps (UpSet), zlib vs baseline perplexity of easy examples, entropy vs
log-probability on (T ∩ B) \\ S, memorization vs distillation temperature, the predictor
(metrics, ROC/PR, coefficients), utility (validation loss/perplexity), pre-filtering
(memorization before and after re-distilling without the flagged examples), verbatim corpus
spans in the teacher's hard-distillation continuations, memorization over training, the
overlap with other model families, decoded spot checks and the memorized examples with their
text::

    base.py          Section, Table, Figure; how numbers are shown
    memorization.py  rates, sets, zlib, mechanism, temperature, utility, examples
    prefilter.py     predictor, filter
    scan.py          scan (the teacher's continuations against the corpus)
    training.py      training (rate vs step), families (cross-family), spot_checks

Each section function returns a :class:`Section`: its view (tables, figures, values for its
template ``templates/sections/<id>.html.j2``) or a note naming the missing input and the
command that writes it, plus its part of ``summary.json``. Nothing here writes HTML or draws.
Only measure tables are required; inconsistent inputs (different study sets, an
incompatible run directory) raise.
"""

from __future__ import annotations

from collections.abc import Mapping

from kdmem.analysis.sections.base import TITLES, Figure, Section, Table, num, pct
from kdmem.analysis.sections.memorization import (
    examples,
    mechanism,
    rates,
    sets,
    temperature,
    utility,
    zlib,
)
from kdmem.analysis.sections.prefilter import predictor, prefilter
from kdmem.analysis.sections.scan import scan
from kdmem.analysis.sections.training import families, spot_checks, training
from kdmem.analysis.tables import RunDir

__all__ = ["TITLES", "Figure", "Section", "Table", "gather", "num", "pct"]


def gather(
    run: RunDir,
    *,
    max_examples: int,
    sample_size: int,
    seed: int,
    others: Mapping[str, RunDir] | None = None,
) -> list[Section]:
    """Every section of the report, in :data:`TITLES` order (computed in that order too, so
    the first inconsistency found is reported as before). ``others``: runs of other model
    families over the same documents, for the cross-family section."""
    out = [rates(run)]
    sets_section, fam = sets(run)
    out += [
        sets_section,
        zlib(run, sample_size=sample_size, seed=seed),
        mechanism(run),
        temperature(fam),
        predictor(run),
        utility(run),
        prefilter(run),
        scan(run),
        training(run),
        families(run, others or {}),
        spot_checks(run),
        examples(run, max_examples=max_examples),
    ]
    return out
