"""The study's analyses over a run directory: sets (T, B, S algebra), the predictor of student
memorization, and the HTML report (Borkar et al. 2026; see docs/run_dir.md for the layout).

Everything here reads the per-example tables of docs/formats.md (``measure/<role>.parquet``,
``features.parquet``) and writes JSON, Parquet, PNG and HTML. scikit-learn and matplotlib are
imported only inside the functions that need them, so importing this package stays light.
"""

from __future__ import annotations

from kdmem.analysis.rundir import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    FeatureTable,
    MeasureTable,
    Role,
    RunDir,
    parse_role,
)

__all__ = [
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "FeatureTable",
    "MeasureTable",
    "Role",
    "RunDir",
    "parse_role",
]
