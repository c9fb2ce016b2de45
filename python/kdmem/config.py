"""Experiment configs: TOML -> typed, frozen, validated objects, plus ``key=value`` overrides.

``kdmem run EXP.toml [section.key=value ...]`` reads an :class:`ExperimentConfig`. Unknown
sections or keys are an error naming the valid ones; values are type-checked (ints are
accepted where floats are expected, nothing else is coerced). The resolved config is written
into the run directory as ``config.toml``; each pipeline stage hashes only the sections it
depends on, so changing one key re-runs only the stages downstream of it.

Defaults are the paper's (Borkar et al. 2026) where it states one: prefix 50, suffix 50,
256-token sequences, lr 5e-5 with cosine decay, teacher 3 epochs, soft distillation with
forward KL at T = 2 and no CE term, hard distillation on 206-token greedy continuations,
3 seeds, negatives sampled 1:3 with 100 resamples for the predictor.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from kdmem.errors import ConfigError

__all__ = [
    "ExperimentConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "to_toml",
]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RunSection:
    """Where the run lives and the seeds of baseline and student runs (data order + init)."""

    name: str
    dir: str = ""  # default: runs/<name>
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int | None = None  # Rust corpus work; default KDMEM_NUM_THREADS or every core
    device: str | None = None  # default: cuda when available, else cpu
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """The corpus, its tokenizer and the study set D drawn from it."""

    corpus: list[str]  # files, a local HF datasets dir, or a hub dataset name
    tokenizer: str  # hub id or directory (usually the student's)
    text_field: str = "text"
    subset: str | None = None  # hub dataset config name (e.g. a crawl or "wikitext-103-raw-v1")
    split: str = "train"
    max_documents: int | None = None  # read at most this many corpus records (streamed sources)
    n_examples: int = 1_000_000
    n_validation: int = 1_000
    seq_len: int = 256
    prefix: int = 50
    suffix: int = 50
    sample_seed: int = 0
    dtype: Literal["auto", "u16", "u32"] = "auto"


@dataclass(frozen=True, kw_only=True)
class ModelsSection:
    """Base checkpoints: a large teacher and the student-size model (hub ids or dirs)."""

    teacher: str
    student: str


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    """Cross-entropy fine-tuning (teacher, baseline) or distillation optimisation settings."""

    epochs: int = 3
    lr: float = 5e-5
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0


@dataclass(frozen=True, kw_only=True)
class SoftSection(TrainSection):
    """Soft distillation: ``T^2 * KL(teacher_T || student_T)`` (``alpha`` mixes in CE)."""

    enabled: bool = True
    loss: Literal["fkl", "rkl", "jsd"] = "fkl"
    temperature: float = 2.0
    alpha: float = 0.0
    temperatures: list[float] = field(default_factory=list)  # optional sweep (seed 0 only)


@dataclass(frozen=True, kw_only=True)
class HardSection(TrainSection):
    """Hard distillation: CE on the teacher's greedy continuations of D's prefixes."""

    enabled: bool = True
    gen_len: int = 256  # prefix (data.prefix tokens) + continuation


@dataclass(frozen=True, kw_only=True)
class MeasureSection:
    """One teacher-forced pass per model over D."""

    batch_size: int | None = None  # None = automatic
    verify_generate: int = 0  # re-decode K random examples + near-ties with generate()
    entropy_last_k: int = 50


@dataclass(frozen=True, kw_only=True)
class FeaturizeSection:
    """Corpus features of D against the suffix-array index of the whole corpus."""

    enabled: bool = True
    ngram: list[int] = field(default_factory=lambda: [8])


@dataclass(frozen=True, kw_only=True)
class PredictSection:
    """Logistic-regression predictor of student memorization."""

    features: list[str] = field(
        default_factory=lambda: ["zlib_bytes", "ppl_teacher", "ppl_baseline", "kl_teacher_baseline"]
    )
    corpus_features: bool = False
    target: str = "student_soft"
    resamples: int = 100
    negatives_per_positive: int = 3
    test_fraction: float = 0.3
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class FilterSection:
    """Pre-filtering: drop the examples the predictor flags, re-distill, measure again."""

    enabled: bool = True
    threshold: float = 0.5


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """A whole study (``kdmem run``); see ``configs/`` for the paper's settings."""

    run: RunSection
    data: DataSection
    models: ModelsSection
    teacher: TrainSection = field(default_factory=lambda: TrainSection(epochs=3))
    baseline: TrainSection = field(default_factory=lambda: TrainSection(epochs=4))
    soft: SoftSection = field(default_factory=SoftSection)
    hard: HardSection = field(default_factory=HardSection)
    measure: MeasureSection = field(default_factory=MeasureSection)
    featurize: FeaturizeSection = field(default_factory=FeaturizeSection)
    predict: PredictSection = field(default_factory=PredictSection)
    filter: FilterSection = field(default_factory=FilterSection)

    def run_dir(self) -> Path:
        return Path(self.run.dir or f"runs/{self.run.name}")

    def validate(self) -> None:
        d = self.data
        if d.prefix < 1 or d.suffix < 1 or d.prefix + d.suffix > d.seq_len:
            raise ConfigError(
                f"invalid data.prefix = {d.prefix} / data.suffix = {d.suffix}: need both >= 1 "
                f"and prefix + suffix <= data.seq_len = {d.seq_len}"
            )
        if self.hard.gen_len <= d.prefix:
            raise ConfigError(
                f"invalid hard.gen_len = {self.hard.gen_len}: must exceed data.prefix = {d.prefix}"
            )
        if not self.run.seeds:
            raise ConfigError("invalid run.seeds = []: give at least one seed, e.g. [0]")
        for t in self.soft.temperatures:
            if t <= 0:
                raise ConfigError(f"invalid soft.temperatures entry {t}: temperatures are > 0")


def _check(name: str, value: Any, tp: Any) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"invalid [{name}]: expected a table, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"invalid {name} = {value!r}: choose one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        last: ConfigError | None = None
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _check(name, value, arg)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"invalid {name} = {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"invalid {name} = {value!r}: expected a list")
        (item,) = get_args(tp)
        return [_check(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"invalid {name} = {value!r}: expected an integer")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"invalid {name} = {value!r}: expected {tp.__name__}, got {type(value).__name__}"
        )
    return value


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise
    :class:`~kdmem.errors.ConfigError` naming the valid keys."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + u for u in unknown)} in {where}; "
            f"valid keys: {', '.join(names)}"
        )
    checked = {k: _check(prefix + k, v, hints[k]) for k, v in values.items()}
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in checked
    ]
    if required:
        raise ConfigError(f"missing required key(s) {', '.join(prefix + r for r in required)}")
    obj = cls(**checked)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as TOML, else taken as a string)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for ov in overrides:
        key, sep, raw = ov.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"invalid override {ov!r}: write section.key=value, e.g. soft.temperature=4"
            )
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"invalid override {ov!r}: {p} is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override, type-check and validate an experiment TOML file."""
    p = Path(path)
    try:
        values = tomllib.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config {p} not found; pass the path of an experiment TOML file"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML ({e}); fix the file") from None
    return from_dict(ExperimentConfig, apply_overrides(values, overrides or []))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def to_toml(cfg: ExperimentConfig) -> str:
    """The resolved config as TOML (``None`` values are omitted: they mean the default)."""
    lines: list[str] = []
    for section in dataclasses.fields(cfg):
        lines.append(f"[{section.name}]")
        for k, v in dataclasses.asdict(getattr(cfg, section.name)).items():
            if v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
