"""The analysis view of a run directory: per-example tables read, validated and cached.

The analyses read (paths: :class:`kdmem.rundir.Layout`; columns: docs/formats.md)

* ``measure/<role>.parquet``: one row per example, key ``example_id`` (int64, sorted, unique),
  at least ``memorized: bool``; role names follow :func:`parse_role`;
* ``features.parquet`` (optional): corpus features such as ``zlib_bytes``;
* ``data/examples.parquet`` (optional): ``example_id`` and the decoded ``text``;
* ``validation/<role>.json`` (optional): held-out ``loss`` and ``ppl`` per model;
* ``manifest.json`` (optional): read under :func:`kdmem.rundir.read_manifest`'s version rule.

Every table of one run must describe the same study set: identical example ids, checked on
load (:class:`~kdmem.errors.StudySetMismatchError`).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from kdmem.errors import (
    CorruptFileError,
    MissingStageInputError,
    StudySetMismatchError,
    TableSchemaError,
)
from kdmem.rundir import Layout, read_manifest, table_meta

# Which command writes each input, for "missing input" messages.
STAGE_MEASURE = "kdmem measure"
STAGE_FEATURIZE = "kdmem featurize"
STAGE_PREDICT = "kdmem predict"
STAGE_SETS = "kdmem sets"

KINDS = ("teacher", "baseline", "student_soft", "student_hard")
_ROLE_RE = re.compile(
    r"^(?P<kind>[a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*?)"
    r"(?:_T(?P<temp>\d+(?:\.\d+)?))?"
    r"(?:_seed(?P<seed>\d+))?$"
)


@dataclass(frozen=True, order=True)
class Role:
    """A parsed role name: ``<kind>[_T<temperature>][_seed<k>]``.

    ``kind`` is ``teacher``, ``baseline``, ``student_soft``, ``student_hard`` or any other
    lower-case name (e.g. ``student_soft_filtered``), which the set analyses ignore but the
    rates table still lists. ``temperature`` is set only for the soft-student temperature sweep;
    the untagged soft student is the main one at the configured temperature.
    """

    kind: str
    temperature: float | None
    seed: int | None
    name: str = field(compare=False)


def parse_role(name: str) -> Role:
    """Parse ``student_soft_T4_seed1`` into ``Role("student_soft", 4.0, 1)``.

    Raises:
        TableSchemaError: the name does not follow the convention.
    """
    m = _ROLE_RE.match(name)
    if m is None:
        raise TableSchemaError(
            f"role name {name!r} does not follow <kind>[_T<temperature>][_seed<k>] "
            f"(e.g. baseline_seed0, student_soft_T4_seed1): rename measure/{name}.parquet"
        )
    temp = m.group("temp")
    seed = m.group("seed")
    return Role(
        kind=m.group("kind"),
        temperature=None if temp is None else float(temp),
        seed=None if seed is None else int(seed),
        name=name,
    )


# ---- tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureTable:
    """``measure/<role>.parquet`` in memory: every column as a numpy array of ``n`` rows.

    ``example_id`` is int64, strictly increasing; ``memorized`` is bool.
    """

    role: Role
    path: Path
    example_id: npt.NDArray[np.int64]
    columns: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.example_id)

    @property
    def memorized(self) -> npt.NDArray[np.bool_]:
        return self.columns["memorized"]

    def memorized_ids(self) -> frozenset[int]:
        """Example ids of the memorized examples (the role's set: T, B or S)."""
        return frozenset(self.example_id[self.memorized].tolist())

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise TableSchemaError(
                f"{self.path} has no column {name!r} (columns: {', '.join(sorted(self.columns))}); "
                f"re-run {STAGE_MEASURE} with a version that writes it"
            )
        return self.columns[name]


@dataclass(frozen=True)
class FeatureTable:
    """``features.parquet`` in memory (columns as numpy arrays, ``example_id`` sorted)."""

    path: Path
    example_id: npt.NDArray[np.int64]
    columns: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.example_id)

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise TableSchemaError(
                f"{self.path} has no column {name!r} (columns: {', '.join(sorted(self.columns))}); "
                f"re-run {STAGE_FEATURIZE}"
            )
        return self.columns[name]


def _read_parquet(path: Path, stage: str) -> pa.Table:
    if not path.exists():
        raise MissingStageInputError(
            f"{path} is missing; it is written by `{stage}`: run that first"
        )
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptFileError(
            f"{path} is not a readable Parquet file ({e}); delete it and re-run `{stage}`"
        ) from None


def _ids_and_columns(
    table: pa.Table, path: Path, stage: str
) -> tuple[npt.NDArray[np.int64], dict[str, np.ndarray]]:
    if "example_id" not in table.column_names:
        raise TableSchemaError(f"{path} has no example_id column; re-run `{stage}`")
    cols: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            continue  # per-token lists are not analysis inputs
        cols[name] = col.to_numpy(zero_copy_only=False)
    ids = cols.pop("example_id")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TableSchemaError(f"{path}: example_id has type {ids.dtype}, expected int64")
    ids = ids.astype(np.int64, copy=False)
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise TableSchemaError(
            f"{path}: example_id is not strictly increasing (unsorted or duplicated rows); "
            f"re-run `{stage}`"
        )
    return ids, cols


def read_measure(path: Path, role: str | None = None) -> MeasureTable:
    """Read and validate one ``measure/<role>.parquet`` (role defaults to the file stem)."""
    path = Path(path)
    table = _read_parquet(path, STAGE_MEASURE)
    ids, cols = _ids_and_columns(table, path, STAGE_MEASURE)
    if "memorized" not in cols:
        raise TableSchemaError(f"{path} has no memorized column; re-run `{STAGE_MEASURE}`")
    mem = cols["memorized"]
    if mem.dtype != np.bool_:
        raise TableSchemaError(f"{path}: memorized has type {mem.dtype}, expected bool")
    meta = table_meta(table)
    return MeasureTable(
        role=parse_role(role or path.stem),
        path=path,
        example_id=ids,
        columns=cols,
        metadata=meta,
    )


def read_features(path: Path) -> FeatureTable:
    """Read and validate ``features.parquet``."""
    path = Path(path)
    table = _read_parquet(path, STAGE_FEATURIZE)
    ids, cols = _ids_and_columns(table, path, STAGE_FEATURIZE)
    return FeatureTable(path=path, example_id=ids, columns=cols)


def check_same_ids(tables: Iterable[tuple[Path, np.ndarray]]) -> None:
    """Raise :class:`StudySetMismatchError` unless every table has identical example ids."""
    first: tuple[Path, np.ndarray] | None = None
    for path, ids in tables:
        if first is None:
            first = (path, ids)
            continue
        p0, ids0 = first
        if len(ids) == len(ids0) and bool(np.array_equal(ids, ids0)):
            continue
        only0 = len(np.setdiff1d(ids0, ids, assume_unique=True))
        only1 = len(np.setdiff1d(ids, ids0, assume_unique=True))
        raise StudySetMismatchError(
            f"{path} ({len(ids)} examples) and {p0} ({len(ids0)} examples) come from different "
            f"study sets ({only1} ids only in the first, {only0} only in the second); "
            "measure every model on the same study set"
        )


def _restrict(ft: FeatureTable, ids: np.ndarray, ref_path: Path) -> FeatureTable:
    if len(ft.example_id) == len(ids) and bool(np.array_equal(ft.example_id, ids)):
        return ft
    if len(ft.example_id) == 0:
        pos = np.zeros(len(ids), dtype=np.int64)
        found = np.zeros(len(ids), dtype=bool)
    else:
        pos = np.minimum(np.searchsorted(ft.example_id, ids), len(ft.example_id) - 1)
        found = ft.example_id[pos] == ids
    if not bool(np.all(found)):
        raise StudySetMismatchError(
            f"{ft.path} lacks {int((~found).sum())} of the {len(ids)} example ids of {ref_path}: "
            f"the tables come from different study sets; re-run `{STAGE_FEATURIZE}` on this run's study set"
        )
    return FeatureTable(
        path=ft.path,
        example_id=ids.copy(),
        columns={k: v[pos] for k, v in ft.columns.items()},
    )


# ---- the run directory -------------------------------------------------------------------------


class RunDir:
    """A run directory opened for analysis: version-checked, tables read lazily and cached.

    Raises on open:
        MissingStageInputError: the directory does not exist.
        FormatVersionError: ``manifest.json`` names another format or a newer version.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.layout = Layout(self.path)
        if not self.path.is_dir():
            raise MissingStageInputError(
                f"run directory {self.path} does not exist; create it with `kdmem run` "
                f"or point at a directory holding measure/<role>.parquet"
            )
        self.manifest = read_manifest(self.path)
        self._measure: dict[str, MeasureTable] = {}
        self._features: FeatureTable | None = None
        self._checked = False

    @property
    def name(self) -> str:
        return self.path.resolve().name

    # -- measure tables

    def measure_path(self, role: str) -> Path:
        return self.layout.measure(role)

    def roles(self) -> list[Role]:
        """Every role with a measure table, sorted (kind, temperature, seed)."""
        d = self.layout.measure_dir
        if not d.is_dir():
            return []
        roles = [parse_role(p.stem) for p in d.glob("*.parquet") if not p.name.startswith(".")]
        rank = {k: i for i, k in enumerate(KINDS)}
        return sorted(
            roles,
            key=lambda r: (
                rank.get(r.kind, len(KINDS)),
                r.kind,
                -1.0 if r.temperature is None else r.temperature,
                -1 if r.seed is None else r.seed,
                r.name,
            ),
        )

    def has_measure(self, role: str) -> bool:
        return self.measure_path(role).exists()

    def measure(self, role: str) -> MeasureTable:
        """The role's measure table; every table read is checked against the others' ids."""
        if role not in self._measure:
            table = read_measure(self.measure_path(role), role)
            self._measure[role] = table
            self._check_ids()
        return self._measure[role]

    def all_measures(self) -> dict[str, MeasureTable]:
        return {r.name: self.measure(r.name) for r in self.roles()}

    def find(self, kind: str, *, temperature: float | None = None) -> list[MeasureTable]:
        """Tables of ``kind`` (and the given sweep temperature), ordered by seed."""
        out = [
            self.measure(r.name)
            for r in self.roles()
            if r.kind == kind and r.temperature == temperature
        ]
        return sorted(out, key=lambda t: (t.role.seed is not None, t.role.seed or 0))

    def primary(self, kind: str) -> MeasureTable:
        """The role's main table: untagged, else the lowest seed.

        Raises:
            MissingStageInputError: no table of this kind.
        """
        found = self.find(kind)
        if not found:
            raise MissingStageInputError(
                f"{self.measure_path(kind)} (or {kind}_seed<k>.parquet) is missing; it is written "
                f"by `{STAGE_MEASURE}`: run that first"
            )
        return found[0]

    # -- features, texts, validation

    @property
    def features_path(self) -> Path:
        return self.layout.features

    def has_features(self) -> bool:
        return self.features_path.exists()

    def features(self) -> FeatureTable:
        """``features.parquet``, restricted to the measured examples.

        featurize may cover examples that measure skipped (shorter than prefix + suffix), so a
        features table holding a superset of the measure tables' ids is cut down to them; one
        lacking a measured id is a :class:`StudySetMismatchError`.
        """
        if self._features is None:
            ft = read_features(self.features_path)
            roles = self.roles()
            if not self._measure and roles:
                self.measure(roles[0].name)
            if self._measure:
                ref = next(iter(self._measure.values()))
                ft = _restrict(ft, ref.example_id, ref.path)
            self._features = ft
            self._check_ids()
        return self._features

    def _check_ids(self) -> None:
        pairs = [(t.path, t.example_id) for t in self._measure.values()]
        if self._features is not None:
            pairs.append((self._features.path, self._features.example_id))
        check_same_ids(pairs)

    @property
    def examples_path(self) -> Path:
        return self.layout.examples

    def texts(self, ids: Iterable[int]) -> dict[int, str]:
        """Decoded texts of the given examples from ``data/examples.parquet`` ({} if absent)."""
        path = self.examples_path
        if not path.exists():
            return {}
        schema = pq.read_schema(path)
        if "text" not in schema.names or "example_id" not in schema.names:
            return {}
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return {}
        table = pq.read_table(
            path, columns=["example_id", "text"], filters=[("example_id", "in", wanted)]
        )
        return dict(
            zip(
                (int(i) for i in table.column("example_id").to_pylist() if i is not None),
                (str(t) for t in table.column("text").to_pylist()),
                strict=True,
            )
        )

    def groups(self) -> dict[str, npt.NDArray[np.int64]] | None:
        """``data/groups.parquet`` as {group: sorted example ids}, or None when absent."""
        path = self.layout.groups
        if not path.exists():
            return None
        t = _read_parquet(path, "the run's example groups")
        if not {"example_id", "group"} <= set(t.column_names):
            raise TableSchemaError(f"{path} needs example_id and group columns")
        ids = t.column("example_id").to_numpy().astype(np.int64)
        names = t.column("group").to_pylist()
        out: dict[str, list[int]] = {}
        for i, g in zip(ids, names, strict=True):
            out.setdefault(str(g), []).append(int(i))
        return {g: np.array(sorted(v), dtype=np.int64) for g, v in sorted(out.items())}

    def _config(self) -> dict[str, Any]:
        """``config.toml`` as a dict ({} when the run has none or it does not parse: the
        report then leaves out what it would have said from it)."""
        if not self.layout.config.exists():
            return {}
        try:
            return tomllib.loads(self.layout.config.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return {}

    def main_temperature(self) -> float | None:
        """The main soft students' temperature (``[soft] temperature`` of ``config.toml``),
        or None when the run has no config."""
        t = self._config().get("soft", {}).get("temperature")
        return float(t) if isinstance(t, (int, float)) else None

    def seed_init(self) -> str | None:
        """``[run] seed_init`` of ``config.toml`` (what a seed changes), None without a config."""
        cfg = self._config()
        if not cfg:
            return None
        v = cfg.get("run", {}).get("seed_init", "none")
        return str(v)

    def steps(self) -> dict[str, list[dict[str, Any]]]:
        """Memorization over training: ``measure/steps/<role>.json`` as {role: [{"step",
        "n", "memorized", "rate"}]} ({} when the run kept no snapshots)."""
        return {
            str(obj.get("role", stem)): list(obj.get("steps", []))
            for stem, obj in _json_files(
                self.layout.measure_dir / "steps", "delete it and rerun `kdmem run`"
            ).items()
        }

    def validation(self) -> dict[str, dict[str, Any]]:
        """``validation/<role>.json`` files as {role: {"loss": ..., "ppl": ..., ...}}."""
        return _json_files(self.layout.validation_dir, "re-run the training stage")


def _json_files(d: Path, fix: str) -> dict[str, dict[str, Any]]:
    """``d/*.json`` as {file stem: object} (JSON objects only; {} without ``d``); a file that
    does not parse is a one-line :class:`CorruptFileError` ending in ``fix``."""
    out: dict[str, dict[str, Any]] = {}
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        try:
            obj = json.loads(p.read_text("utf-8"))
        except ValueError as e:
            raise CorruptFileError(f"{p} is not valid JSON ({e}); {fix}") from None
        if isinstance(obj, dict):
            out[p.stem] = obj
    return out
