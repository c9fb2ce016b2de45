"""The report's figures: what each one plots (a frozen dataclass of arrays) and how (matplotlib).

:mod:`kdmem.analysis.sections` computes the plotted values from a run directory;
:func:`png` draws one figure and returns its PNG bytes (100 dpi, no ``Software`` metadata, so
the same data gives the same bytes). matplotlib is optional (``pip install "kdmem[analysis]"``):
this is the one module that imports it, through :func:`kdmem.extras.require`, when a figure is
drawn, so that ``import kdmem.analysis.report`` and ``kdmem --help`` stay light. The ROC and
PR curves come from scikit-learn through its one import point,
:func:`kdmem.analysis.protocols.sklearn_api`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from kdmem import extras
from kdmem.analysis.protocols import sklearn_api

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "CoefficientsPlot",
    "EntropyPlot",
    "Plot",
    "RatesPlot",
    "RocPrPlot",
    "StepsPlot",
    "TemperaturePlot",
    "UpSetPlot",
    "ZlibPlot",
    "png",
]

_BLUE, _RED, _GREEN, _GREY, _INK, _LIGHT = (
    "#3c6e9f",
    "#c8402d",
    "#2e8b57",
    "#8a96a3",
    "#1d232a",
    "#d0d6dd",
)


class Plot(Protocol):
    """A figure's data; ``draw`` lays it out on a new matplotlib Figure."""

    def draw(self) -> Figure: ...


def png(plot: Plot) -> bytes:
    """Draw ``plot`` and return the PNG bytes (deterministic for the same data)."""
    buf = io.BytesIO()
    plot.draw().savefig(
        buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None}
    )
    return buf.getvalue()


def _figure(w: float = 6.4, h: float = 4.0) -> Figure:
    extras.require("matplotlib", why="the figures of kdmem report")
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


@dataclass(frozen=True)
class RatesPlot:
    """Memorized share of the study set per role, in percent (one horizontal bar each)."""

    roles: Sequence[str]
    percent: Sequence[float]

    def draw(self) -> Figure:
        fig = _figure(6.4, 0.35 * len(self.roles) + 1.2)
        ax = fig.subplots()
        ax.barh(range(len(self.roles)), list(self.percent), color=_BLUE)
        ax.set_yticks(range(len(self.roles)), list(self.roles))
        ax.invert_yaxis()
        ax.set_xlabel("memorized (% of the study set)")
        return fig


@dataclass(frozen=True)
class UpSetPlot:
    """An UpSet plot: one bar per region (the sets an example is in), largest first.

    ``regions[i]`` is (membership flag per label, number of examples in exactly those sets).
    """

    labels: Sequence[str]
    regions: Sequence[tuple[tuple[bool, ...], int]]

    def draw(self) -> Figure:
        items, labels = self.regions, self.labels
        fig = _figure(0.6 * len(items) + 2.5, 4.2)
        ax_bar, ax_dot = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
        xs = np.arange(len(items))
        ax_bar.bar(xs, [c for _, c in items], color=_BLUE)
        for xi, (_, cnt) in enumerate(items):
            ax_bar.annotate(str(cnt), (xi, cnt), ha="center", va="bottom", fontsize=8)
        ax_bar.set_ylabel("examples")
        for x, (key, _) in enumerate(items):
            ys = [i for i, m in enumerate(key) if m]
            ax_dot.scatter([x] * len(labels), range(len(labels)), color=_LIGHT, s=30)
            ax_dot.scatter([x] * len(ys), ys, color=_INK, s=30)
            if len(ys) > 1:
                ax_dot.plot([x, x], [min(ys), max(ys)], color=_INK)
        ax_dot.set_yticks(range(len(labels)), list(labels))
        ax_dot.set_xticks([])
        ax_dot.invert_yaxis()
        return fig


@dataclass(frozen=True)
class ZlibPlot:
    """zlib_bytes vs baseline perplexity: a random sample of D over the easy examples (T ∩ B).

    Log y-axis when every plotted perplexity is positive.
    """

    zlib_sample: npt.NDArray[np.float64]
    ppl_sample: npt.NDArray[np.floating]
    zlib_easy: npt.NDArray[np.float64]
    ppl_easy: npt.NDArray[np.floating]
    baseline: str

    def draw(self) -> Figure:
        fig = _figure()
        ax = fig.subplots()
        k, n_easy = len(self.zlib_sample), len(self.zlib_easy)
        ax.scatter(
            self.zlib_sample,
            self.ppl_sample,
            s=6,
            alpha=0.4,
            color=_GREY,
            label=f"random sample ({k})",
        )
        ax.scatter(
            self.zlib_easy,
            self.ppl_easy,
            s=10,
            alpha=0.8,
            color=_RED,
            label=f"easy: T ∩ B ({n_easy})",
        )
        if np.all(np.concatenate([self.ppl_sample, self.ppl_easy]) > 0):
            ax.set_yscale("log")
        ax.set_xlabel("zlib_bytes (compressed size of the example text)")
        ax.set_ylabel(f"baseline perplexity ({self.baseline})")
        ax.legend()
        return fig


@dataclass(frozen=True)
class EntropyPlot:
    """Per model (teacher, baseline, student): sequence log-probability vs mean entropy."""

    series: Sequence[tuple[str, npt.NDArray[np.floating], npt.NDArray[np.floating]]]

    def draw(self) -> Figure:
        fig = _figure()
        ax = fig.subplots()
        for (name, lp, ent), color in zip(self.series, (_RED, _BLUE, _GREEN), strict=True):
            ax.scatter(lp, ent, s=10, alpha=0.7, color=color, label=name)
        ax.set_xlabel("sequence log-probability (nats)")
        ax.set_ylabel("mean next-token entropy, last 50 positions (nats)")
        ax.legend()
        return fig


@dataclass(frozen=True)
class TemperaturePlot:
    """Soft-student memorization (%) per distillation temperature, mean ± std over seeds."""

    temperatures: Sequence[float]
    percent_mean: Sequence[float]
    percent_std: Sequence[float]

    def draw(self) -> Figure:
        fig = _figure(5.5, 3.6)
        ax = fig.subplots()
        ax.errorbar(
            list(self.temperatures),
            list(self.percent_mean),
            yerr=list(self.percent_std),
            marker="o",
            capsize=3,
            color=_BLUE,
        )
        ax.set_xlabel("temperature T")
        ax.set_ylabel("soft student memorized (%)")
        return fig


@dataclass(frozen=True)
class StepsPlot:
    """Memorization (%) of the fixed subset vs training step, one line per trained model."""

    series: Sequence[tuple[str, Sequence[int], Sequence[float]]]  # (role, steps, percent)

    def draw(self) -> Figure:
        fig = _figure(6.4, 3.8)
        ax = fig.subplots()
        for role, steps, percent in self.series:
            ax.plot(list(steps), list(percent), marker="o", markersize=3, label=role)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("memorized (% of the subset)")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return fig


@dataclass(frozen=True)
class CoefficientsPlot:
    """The predictor's standardised coefficients (paper protocol), mean ± std per feature."""

    features: Sequence[str]
    mean: Sequence[float]
    std: Sequence[float]

    def draw(self) -> Figure:
        names = list(self.features)
        fig = _figure(5.5, 0.4 * len(names) + 1.2)
        ax = fig.subplots()
        ax.barh(range(len(names)), list(self.mean), xerr=list(self.std), color=_BLUE, capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.axvline(0, color=_INK, lw=0.8)
        ax.set_xlabel("standardised coefficient (paper protocol, mean ± std)")
        return fig


@dataclass(frozen=True)
class RocPrPlot:
    """ROC and precision-recall curves of out-of-fold scores ``score`` against labels
    ``memorized``; the titles carry the AUCs of ``predictor.json``, the PR panel the
    prevalence line."""

    memorized: npt.NDArray[np.bool_]
    score: npt.NDArray[np.floating]
    roc_auc: float
    pr_auc: float
    prevalence: float

    def draw(self) -> Figure:
        metrics = sklearn_api().metrics
        fig = _figure(9.0, 3.8)
        ax1, ax2 = fig.subplots(1, 2)
        fpr, tpr, _ = metrics.roc_curve(self.memorized, self.score)
        ax1.plot(fpr, tpr, color=_BLUE)
        ax1.plot([0, 1], [0, 1], ls="--", color=_GREY, lw=0.8)
        ax1.set_xlabel("false positive rate")
        ax1.set_ylabel("true positive rate")
        ax1.set_title(f"ROC (AUC {self.roc_auc:.3f})")
        prec, rec, _ = metrics.precision_recall_curve(self.memorized, self.score)
        ax2.plot(rec, prec, color=_RED)
        ax2.axhline(self.prevalence, ls="--", color=_GREY, lw=0.8)
        ax2.set_xlabel("recall")
        ax2.set_ylabel("precision")
        ax2.set_title(f"PR (AUC {self.pr_auc:.3f})")
        return fig
