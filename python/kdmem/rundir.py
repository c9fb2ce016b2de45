"""The run directory: the one place that knows its layout, its manifest and the ``kdmem``
metadata every Parquet table carries (docs/run_dir.md, docs/formats.md).

A run directory is the only state of an experiment::

    config.toml              resolved experiment config
    manifest.json            per stage: status, hash, seed, wall time, metrics (kdmem.pipeline)
    tokenizer/               the study's tokenizer (tokenizer.json + HF files)
    shards/                  token shards of the corpus, with one suffix array per shard
    index/build.json         index build report
    data/study.parquet       study set D (example_id, input_ids)
    data/validation.parquet  held-out set
    data/examples.parquet    example_id, decoded text
    data/filtered.parquet    D minus the examples the predictor flags
    models/<role>/           trained models (safetensors, config, tokenizer, kdmem.json)
    validation/<role>.json   held-out loss and perplexity per model
    generations/             the teacher's hard-distillation continuations
    measure/<role>.parquet   per-example labels and scores per model
    measure/steps/<role>/    memorization over training (measure.every_steps): one table per
                             kept model of models/<role>/steps/, on data/steps_subset.parquet
    features.parquet         corpus features of D
    scan/                    teacher_continuations.parquet (the generated tokens of
                             generations/), teacher_spans.parquet (their verbatim corpus spans)
    predictor/               predictor.json, scores.parquet (or skipped.json)
    sets/sets.json           set algebra of T, B, S
    filter/                  flagged.json, filter.json (pre-filtering experiment)
    report/                  index.html, summary.json, figures
    logs/<stage>/            per-rank logs of stages launched with torchrun ([launch])
    launch/<stage>.toml      the resolved recipe config a launched training stage ran
    parts/<job>/             per-shard partial results of a Slurm array (--emit-slurm);
                             parts/shard/task-K/: the shard set of the K-th slice of the corpus
    corpus/, bases/          inputs that ``kdmem demo`` builds

:class:`Layout` gives every path; ``Layout(".")``-relative paths (:data:`REL`) name stage
outputs. :func:`read_manifest` applies the one version rule: kdmem reads run directories of
format :data:`RUN_FORMAT` and version <= :data:`RUN_FORMAT_VERSION`, and writes (resumes) only
its own version. :func:`read_table_meta` / :func:`with_table_meta` read and write the JSON
stored under the ``kdmem`` key of a Parquet file's key-value metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdmem._version import __version__
from kdmem.atomic import write_json_atomic
from kdmem.errors import CorruptFileError, FormatVersionError

__all__ = [
    "PREDICTOR_JSON",
    "PREDICTOR_SCORES",
    "REL",
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "Layout",
    "new_manifest",
    "read_manifest",
    "read_table_meta",
    "table_meta",
    "with_table_meta",
    "write_manifest",
]

RUN_FORMAT = "kdmem-run"
RUN_FORMAT_VERSION = 1
META_KEY = "kdmem"
# Files of a predictor directory (``RUN/predictor`` or ``kdmem predict --out DIR``).
PREDICTOR_JSON = "predictor.json"
PREDICTOR_SCORES = "scores.parquet"


@dataclass(frozen=True)
class Layout:
    """Every path of a run directory rooted at ``root`` (see the module docstring)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    def _p(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- whole-run files
    @property
    def config(self) -> Path:
        return self._p("config.toml")

    @property
    def manifest(self) -> Path:
        return self._p("manifest.json")

    @property
    def manifest_lock(self) -> Path:
        """Held while a process updates the manifest (kdmem.pipeline)."""
        return self._p("manifest.lock")

    # -- corpus and study set
    @property
    def tokenizer_dir(self) -> Path:
        return self._p("tokenizer")

    @property
    def tokenizer_json(self) -> Path:
        return self._p("tokenizer", "tokenizer.json")

    @property
    def shards(self) -> Path:
        return self._p("shards")

    @property
    def index_report(self) -> Path:
        return self._p("index", "build.json")

    @property
    def study(self) -> Path:
        return self._p("data", "study.parquet")

    @property
    def validation_set(self) -> Path:
        return self._p("data", "validation.parquet")

    @property
    def examples(self) -> Path:
        return self._p("data", "examples.parquet")

    @property
    def groups(self) -> Path:
        """Optional ``example_id, group`` labels (e.g. the demo's planted vs natural) that
        the analyses break their figures down by."""
        return self._p("data", "groups.parquet")

    @property
    def filtered(self) -> Path:
        return self._p("data", "filtered.parquet")

    @property
    def steps_subset(self) -> Path:
        """The fixed random subset of D that model snapshots are measured on."""
        return self._p("data", "steps_subset.parquet")

    # -- models and their outputs
    def model(self, role: str) -> Path:
        return self._p("models", role)

    def model_metrics(self, role: str) -> Path:
        return self._p("models", role, "metrics.json")

    def validation(self, role: str) -> Path:
        return self._p("validation", f"{role}.json")

    @property
    def validation_dir(self) -> Path:
        return self._p("validation")

    @property
    def generations(self) -> Path:
        return self._p("generations")

    def measure(self, role: str) -> Path:
        return self._p("measure", f"{role}.parquet")

    @property
    def measure_dir(self) -> Path:
        return self._p("measure")

    def model_snapshots(self, role: str) -> Path:
        """``models/<role>/steps/``: the kept models (``step-NNNNNNN``) of a training run."""
        return self._p("models", role, "steps")

    def measure_steps(self, role: str) -> Path:
        """``measure/steps/<role>/``: one table per kept model (``step-NNNNNNN.parquet``)."""
        return self._p("measure", "steps", role)

    def steps_summary(self, role: str) -> Path:
        """``measure/steps/<role>.json``: memorization rate per kept model."""
        return self._p("measure", "steps", f"{role}.json")

    @property
    def features(self) -> Path:
        return self._p("features.parquet")

    @property
    def continuations(self) -> Path:
        """The teacher's hard-distillation continuations without their prefix (``example_id,
        input_ids``: tokens ``[data.prefix, hard.gen_len)`` of ``generations/``), scanned."""
        return self._p("scan", "teacher_continuations.parquet")

    @property
    def spans(self) -> Path:
        """Maximal verbatim corpus spans of :attr:`continuations` (``kdmem scan`` output)."""
        return self._p("scan", "teacher_spans.parquet")

    # -- analyses
    @property
    def predictor_dir(self) -> Path:
        return self._p("predictor")

    @property
    def predictor(self) -> Path:
        return self._p("predictor", PREDICTOR_JSON)

    @property
    def predictor_scores(self) -> Path:
        return self._p("predictor", PREDICTOR_SCORES)

    @property
    def predictor_skipped(self) -> Path:
        return self._p("predictor", "skipped.json")

    @property
    def sets(self) -> Path:
        return self._p("sets", "sets.json")

    @property
    def filter_dir(self) -> Path:
        return self._p("filter")

    @property
    def flagged(self) -> Path:
        return self._p("filter", "flagged.json")

    @property
    def filter_result(self) -> Path:
        return self._p("filter", "filter.json")

    @property
    def report_dir(self) -> Path:
        return self._p("report")

    @property
    def report_index(self) -> Path:
        return self._p("report", "index.html")

    @property
    def report_summary(self) -> Path:
        return self._p("report", "summary.json")

    # -- launched model passes and cluster runs (kdmem.launch)
    def logs(self, stage: str) -> Path:
        """Per-rank logs of a launched stage: ``rank<R>.log`` and ``launcher.log``."""
        return self._p("logs", stage)

    def launch_recipe(self, stage: str) -> Path:
        """The resolved recipe config a launched training stage passes to ``kdmem train|distill``."""
        return self._p("launch", f"{stage}.toml")

    def parts(self, job: str) -> Path:
        """Partial results of a corpus stage's Slurm array ``job`` (``featurize``,
        ``scan-lm``, ``scan-hits``: per index shard; ``shard``: per slice of the corpus)."""
        return self._p("parts", job)

    # -- what `kdmem demo` builds before the study
    def corpus(self, name: str) -> Path:
        return self._p("corpus", name)

    def bases(self, name: str) -> Path:
        return self._p("bases", name)


REL = Layout("")
"""Paths relative to the run directory (stage outputs in the manifest)."""


# ---- the manifest ---------------------------------------------------------------------------


def new_manifest() -> dict[str, Any]:
    """An empty manifest of this kdmem's format and version."""
    return {
        "format": RUN_FORMAT,
        "version": RUN_FORMAT_VERSION,
        "kdmem_version": __version__,
        "stages": {},
    }


def read_manifest(root: str | os.PathLike[str], *, for_update: bool = False) -> dict[str, Any]:
    """``root/manifest.json`` (a fresh one when absent) under the one version rule.

    Reading accepts format :data:`RUN_FORMAT` at any version up to
    :data:`RUN_FORMAT_VERSION`; ``for_update`` (running stages) accepts only this version.

    Raises:
        CorruptFileError: not JSON, or not a JSON object.
        FormatVersionError: another format, or a version this kdmem does not read/write.
    """
    layout = Layout(root)
    path = layout.manifest
    if not path.exists():
        return new_manifest()
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except ValueError as e:
        raise CorruptFileError(
            f"{path} is not valid JSON ({e}); restore it, or delete it to rerun every stage"
        ) from None
    if not isinstance(manifest, dict):
        raise CorruptFileError(f"{path} is not a JSON object; restore it or delete it")
    fmt = manifest.get("format")
    version = manifest.get("version")
    readable = fmt == RUN_FORMAT and isinstance(version, int) and version <= RUN_FORMAT_VERSION
    if not readable or (for_update and version != RUN_FORMAT_VERSION):
        written = manifest.get("kdmem_version", "an unknown kdmem")
        raise FormatVersionError(
            f"{layout.root} is a {fmt!r} run directory version {version} written by kdmem "
            f"{written}; this kdmem {'resumes' if for_update else 'reads'} {RUN_FORMAT!r} "
            f"version {'' if for_update else '<= '}{RUN_FORMAT_VERSION}: upgrade kdmem or "
            "start a new run directory"
        )
    manifest.setdefault("stages", {})
    return manifest


def write_manifest(root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Write ``root/manifest.json`` atomically, stamped with this kdmem's version."""
    manifest["kdmem_version"] = __version__
    write_json_atomic(Layout(root).manifest, manifest)


# ---- Parquet key-value metadata ----------------------------------------------------------------


def table_meta(table: pa.Table | pa.Schema) -> dict[str, Any]:
    """The ``kdmem`` metadata (JSON object) of a table or schema; ``{}`` when absent."""
    schema = table.schema if isinstance(table, pa.Table) else table
    raw = (schema.metadata or {}).get(META_KEY.encode())
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    return dict(meta) if isinstance(meta, dict) else {}


def read_table_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``kdmem`` metadata of a Parquet file, from its footer (no data pages read)."""
    return table_meta(pq.read_schema(Path(path)))


def with_table_meta(table: pa.Table, meta: dict[str, Any]) -> pa.Table:
    """``table`` carrying ``meta`` (JSON, sorted keys) as its only key-value metadata."""
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
