"""The study's analyses over a run directory: sets (T, B, S algebra), the predictor of student
memorization, pre-filtering, and the HTML report (Borkar et al. 2026; layout: docs/run_dir.md).

Everything here reads the per-example tables of docs/formats.md (``measure/<role>.parquet``,
``features.parquet``) through :class:`~kdmem.analysis.tables.RunDir` and writes JSON,
Parquet, PNG and HTML. scikit-learn and matplotlib are needed by the predictor and the
figures only (``pip install "kdmem[analysis]"``).
"""

from __future__ import annotations

from kdmem.analysis.tables import FeatureTable, MeasureTable, Role, RunDir, parse_role

__all__ = ["FeatureTable", "MeasureTable", "Role", "RunDir", "parse_role"]
