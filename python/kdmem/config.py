"""Every typed config of kdmem, one loader, and TOML in and out.

Two kinds of config share one set of field definitions:

* the **recipes** (:class:`FinetuneConfig` for ``kdmem train``, :class:`DistillConfig` for
  ``kdmem distill``): one run of one training loop;
* the **experiment** (:class:`ExperimentConfig`, ``kdmem run EXP.toml``): the whole study, whose
  ``[teacher]``, ``[baseline]``, ``[soft]`` and ``[hard]`` sections are the same
  :class:`Optim` settings the recipes take (the study turns each into a recipe config).

Every field carries its help text (``field(metadata={"help": ...})``, read by :func:`help_of`);
the ``kdmem train`` / ``kdmem distill`` options are generated from the recipe fields, and
``tests/test_config.py`` checks the other commands' shared options against them. :func:`from_dict`
is the one loader: unknown keys are an error naming the valid ones, values are type-checked
(ints are accepted where floats are expected, nothing else is coerced), then ``validate()``
runs. ``key=value`` overrides (:func:`apply_overrides`) are parsed as TOML values. The resolved
experiment config is written into the run directory with ``tomli-w`` (:func:`to_toml`).

Defaults are the paper's (Borkar et al. 2026) where it states one: prefix 50, suffix 50,
256-token sequences, lr 5e-5 with cosine decay, teacher 3 epochs, baseline 4 (Pythia), soft
distillation with forward KL at T = 2 and no CE term, hard distillation on 206-token greedy
continuations, 3 seeds, negatives sampled 1:3 with 100 resamples for the predictor.

This file holds every config class on purpose (about 770 lines, with the ``[launch]``,
``[scan]`` and ``[slurm]`` sections): a newcomer looking for a field, its default or its help
finds it here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import tomli_w

from kdmem.errors import ConfigError, KdmemIOError

__all__ = [
    "DistillConfig",
    "ExperimentConfig",
    "FinetuneConfig",
    "LaunchSection",
    "Optim",
    "OptimConfig",
    "SlurmSection",
    "apply_overrides",
    "config_from_dict",
    "config_hash",
    "from_dict",
    "help_of",
    "load_config",
    "load_recipe",
    "recipe_to_toml",
    "to_toml",
]

T = TypeVar("T")

Precision = Literal["fp32", "bf16"]
Schedule = Literal["cosine", "linear", "constant"]
Distributed = Literal["ddp", "fsdp"]
Divergence = Literal["fkl", "rkl", "jsd"]
SeedInit = Literal["none", "random_head"]


def opt(default: T, help: str) -> T:
    """A field with a default and its help text."""
    f: T = field(default=default, metadata={"help": help})
    return f


def opt_list(factory: typing.Callable[[], T], help: str) -> T:
    """A field with a mutable default (a list) and its help text."""
    f: T = field(default_factory=factory, metadata={"help": help})
    return f


def required(help: str) -> Any:
    """A field without a default (the loader names it when missing)."""
    return field(metadata={"help": help})


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of config class ``cls`` ("" when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(f"{cls.__name__} has no field {name!r}")


# ---- shared: optimisation settings -----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Optim:
    """How one model is optimised: the experiment's ``[teacher]``, ``[baseline]``, ``[soft]`` and
    ``[hard]`` sections and the optimisation fields of every recipe. Batch sizes are in
    sequences and per process: the global batch is ``batch_size * grad_accum * processes``."""

    epochs: int = opt(3, "Passes over the data.")
    lr: float = opt(5e-5, "Peak learning rate (paper: 5e-5).")
    schedule: Schedule = opt("cosine", "Decay after warmup.")
    warmup_steps: int = opt(0, "Linear warmup steps.")
    min_lr_ratio: float = opt(0.0, "Final lr as a fraction of --lr.")
    weight_decay: float = opt(0.0, "AdamW weight decay (matrices only).")
    adam_beta1: float = opt(0.9, "AdamW beta1.")
    adam_beta2: float = opt(0.999, "AdamW beta2.")
    adam_eps: float = opt(1e-8, "AdamW epsilon.")
    batch_size: int = opt(8, "Sequences per micro-batch per process.")
    grad_accum: int = opt(1, "Micro-batches per optimizer step.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 = off).")
    checkpoint_every: int = opt(0, "Checkpoint every N optimizer steps (0 = end of each epoch).")
    chunk_size: int = opt(128, "Sequence positions per fp32 logits block in the loss.")
    drop_last: bool = opt(
        False,
        "Skip each epoch's last N mod G examples instead of a smaller last step (default: "
        "every example every epoch, as in the paper).",
    )

    def validate(self) -> None:
        """Raise :class:`~kdmem.errors.ConfigError` naming the first out-of-domain value."""
        for name in ("epochs", "batch_size", "grad_accum", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid {name} = {getattr(self, name)}: must be >= 1")
        for name in ("warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"invalid {name} = {getattr(self, name)}: must be >= 0")
        if not self.lr > 0:
            raise ConfigError(f"invalid lr = {self.lr}: must be > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"invalid min_lr_ratio = {self.min_lr_ratio}: use [0, 1]")


@dataclass(frozen=True, kw_only=True)
class SoftKD:
    """The soft-distillation loss: ``(1 - alpha) * T^2 * D(teacher || student) + alpha * CE``."""

    loss: Divergence = opt(
        "fkl", "Soft-mode divergence: forward KL, reverse KL or generalized JSD."
    )
    temperature: float = opt(2.0, "Softmax temperature of the soft loss (paper: 2).")
    alpha: float = opt(0.0, "Weight of ground-truth CE mixed into the soft loss (paper: 0).")

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"invalid temperature = {self.temperature}: must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"invalid alpha = {self.alpha}: use [0, 1]")


# ---- recipes ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Optim):
    """Fields of every recipe: data, output, precision, seed, processes, plus :class:`Optim`."""

    data: str = required("Training set D: shard dir, .parquet or 2-D .npy of token ids.")
    out: str = required("Output directory: model, metrics.json, kdmem.json, checkpoint/.")
    val_data: str | None = opt(None, "Held-out set for validation loss / perplexity per epoch.")
    seq_len: int | None = opt(None, "Tokens per sequence (default: the data's length).")
    precision: Precision = opt("fp32", "fp32, or bf16 autocast with fp32 master weights.")
    seed: int = opt(
        0, "Seed of the data order (and of the init with --init random or --seed-init random_head)."
    )
    init: Literal["pretrained", "random"] = opt(
        "pretrained",
        "Start from the pretrained weights or a seeded random init of the same config.",
    )
    seed_init: SeedInit = opt(
        "none",
        "From pretrained weights the seed changes the data order only ('none'); "
        "'random_head' also re-initialises the lm-head from the seed (untied heads only).",
    )
    keep_checkpoint: bool = opt(False, "Keep OUT/checkpoint after the final model is written.")
    snapshot_every: int = opt(
        0,
        "Keep the model every N optimizer steps under OUT/steps/ (memorization over "
        "training; 0 = never).",
    )
    distributed: Distributed = opt(
        "ddp", "Multi-process strategy under torchrun / accelerate launch."
    )
    device: str | None = opt(None, "cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available).")

    def validate(self) -> None:
        super().validate()
        if self.snapshot_every < 0:
            raise ConfigError(f"invalid snapshot_every = {self.snapshot_every}: must be >= 0")
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"invalid seq_len = {self.seq_len}: must be >= 2")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(OptimConfig):
    """Cross-entropy fine-tuning of ``model`` (hub id or local dir) on ``data``; ``role``
    (teacher or baseline) is recorded in ``OUT/kdmem.json``."""

    role: Literal["teacher", "baseline"] = required(
        "Which study role this fine-tune produces (recorded in OUT/kdmem.json)."
    )
    model: str = required("Base model: hub id or local directory (safetensors).")


@dataclass(frozen=True, kw_only=True)
class DistillConfig(OptimConfig, SoftKD):
    """Distil ``teacher`` (a fine-tuned model dir) into ``student`` (hub id or dir).

    ``mode``: soft = ``(1 - alpha) * T^2 * D(teacher, student) + alpha * CE`` at every token
    (paper: fkl, T = 2, alpha = 0); hard = CE on the teacher's greedy continuations of
    ``prefix_len``-token prefixes to ``gen_len`` tokens; argmax = CE on the teacher's argmax
    next token at every position of the original text."""

    teacher: str = required("Fine-tuned teacher directory (or hub id).")
    student: str = required("Student base model: hub id or local directory.")
    mode: Literal["soft", "hard", "argmax"] = opt(
        "soft",
        "soft: T^2*KL at every token; hard: CE on teacher continuations; argmax: CE on teacher argmax.",
    )
    beta: float = opt(0.5, "Generalized JSD mixing weight.")
    prefix_len: int = opt(50, "Hard mode: prefix tokens given to the teacher (paper: 50).")
    gen_len: int = opt(256, "Hard mode: total tokens per synthetic sequence (paper: 256).")
    gen_batch_size: int = opt(32, "Hard mode: sequences per generation batch.")
    generations_dir: str | None = opt(
        None, "Hard mode: continuation cache (default OUT/../generations)."
    )
    teacher_precision: Precision | None = opt(None, "Teacher dtype (default: --precision).")
    teacher_shard: Literal["none", "fsdp", "fsdp_offload"] = opt(
        "none",
        "Shard the teacher with FSDP2 (optionally CPU-offloaded); needs --distributed fsdp.",
    )

    def validate(self) -> None:
        OptimConfig.validate(self)
        SoftKD.validate(self)
        if self.loss == "jsd" and not 0.0 < self.beta < 1.0:
            raise ConfigError(
                f"invalid beta = {self.beta}: jsd needs 0 < beta < 1 (beta -> 0 is fkl)"
            )
        if self.mode == "hard" and not 0 < self.prefix_len < self.gen_len:
            raise ConfigError(
                f"invalid prefix_len = {self.prefix_len} / gen_len = {self.gen_len}: "
                "need 0 < prefix_len < gen_len"
            )
        if self.teacher_shard != "none" and self.distributed != "fsdp":
            raise ConfigError(f"teacher_shard = {self.teacher_shard!r} needs distributed = 'fsdp'")


C = TypeVar("C", bound=OptimConfig)

# Recipe fields that do not change the trained weights (excluded from the hash).
_NOT_HASHED = {
    "out",
    "keep_checkpoint",
    "device",
    "generations_dir",
    "gen_batch_size",
    "snapshot_every",
}


def config_hash(cfg: OptimConfig) -> str:
    """SHA-256 hex of the recipe fields that determine the trained weights (sorted JSON); a
    checkpoint only resumes under the same hash."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_HASHED}
    d["__recipe__"] = type(cfg).__name__
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


# ---- the experiment --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunSection:
    """Where the run lives and the seeds of baseline and student runs (data order + init)."""

    name: str = required("Run name; the run directory defaults to runs/<name>.")
    dir: str = opt("", "Run directory (default: runs/<name>).")
    seeds: list[int] = opt_list(lambda: [0, 1, 2], "Seeds of baseline and student runs.")
    threads: int | None = opt(
        None, "Rust corpus threads (default: KDMEM_NUM_THREADS or every core)."
    )
    device: str | None = opt(None, "cpu, cuda, cuda:1 (default: cuda when available).")
    precision: Precision = opt("fp32", "fp32, or bf16 autocast with fp32 master weights.")
    seed_init: SeedInit = opt(
        "none",
        "What a seed changes besides the data order of baseline and student runs: 'none' "
        "(pretrained initialisation, as in the paper) or 'random_head' (the lm-head "
        "re-initialised from the seed; untied heads only).",
    )

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) or ".." in self.name:
            raise ConfigError(
                f"invalid run.name = {self.name!r}: use letters, digits, '.', '_' and '-' (no "
                "path separators, no '..'); put the directory in run.dir"
            )


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """The corpus, its tokenizer and the study set D drawn from it."""

    corpus: list[str] = required("Files, a local HF datasets dir, or a hub dataset name.")
    tokenizer: str = required("Hub id or directory (usually the student's).")
    text_field: str = opt("text", "JSON key / column of the text.")
    subset: str | None = opt(
        None, 'Hub dataset config name (e.g. a crawl or "wikitext-103-raw-v1").'
    )
    split: str = opt("train", "Split of datasets inputs.")
    max_documents: int | None = opt(None, "Read at most N corpus records (streamed sources).")
    n_examples: int = opt(1_000_000, "Size of the study set D (paper: 1M).")
    windows: Literal["document", "stream"] = opt(
        "document",
        "How D's seq_len-token windows are cut: 'document' (each document's first seq_len "
        "tokens; the same documents for every model family) or 'stream' (consecutive windows "
        "of the concatenated corpus: short documents such as WikiText lines count too).",
    )
    allow_fewer: bool = opt(
        False,
        "Accept a corpus that supplies fewer than n_examples windows (otherwise an error "
        "naming how many it can supply).",
    )
    n_validation: int = opt(1_000, "Held-out examples for validation loss.")
    seq_len: int = opt(256, "Tokens per example (paper: 256).")
    prefix: int = opt(50, "Prefix tokens (paper: 50).")
    suffix: int = opt(50, "Suffix tokens (paper: 50).")
    sample_seed: int = opt(0, "Seed of the study-set sample.")
    dtype: Literal["auto", "u16", "u32"] = opt("auto", "Token dtype of the shards.")


@dataclass(frozen=True, kw_only=True)
class ModelsSection:
    """Base checkpoints: a large teacher and the student-size model (hub ids or dirs)."""

    teacher: str = required("Teacher base model: hub id or directory.")
    student: str = required("Student-size base model: hub id or directory.")


@dataclass(frozen=True, kw_only=True)
class SoftSection(Optim, SoftKD):
    """Soft distillation: ``T^2 * KL(teacher_T || student_T)`` (``alpha`` mixes in CE)."""

    enabled: bool = opt(True, "Train soft students.")
    temperatures: list[float] = opt_list(list, "Extra temperatures to sweep (first seed only).")

    def validate(self) -> None:
        Optim.validate(self)
        SoftKD.validate(self)


@dataclass(frozen=True, kw_only=True)
class HardSection(Optim):
    """Hard distillation: CE on the teacher's greedy continuations of D's prefixes."""

    enabled: bool = opt(True, "Train hard students.")
    gen_len: int = opt(256, "Prefix (data.prefix tokens) + continuation, in tokens.")


@dataclass(frozen=True, kw_only=True)
class MeasureSection:
    """One teacher-forced pass per model over D."""

    batch_size: int | None = opt(None, "'auto' (None) or N; halved on CUDA OOM.")
    verify_generate: int = opt(
        0, "Re-decode K random examples plus every near-tie; flip rate goes in the metadata."
    )
    spot_checks: int = opt(
        8, "Re-decode K random memorized examples per model; the report shows them decoded."
    )
    partial: bool = opt(
        False,
        "Add match_frac, the decoded partial score (Biderman et al. 2023); greedy-decodes "
        "every non-memorized example.",
    )
    entropy_last_k: int = opt(50, "Positions at the end whose next-token entropy is averaged.")
    every_steps: int = opt(
        0,
        "Memorization over training: keep every trained model every K optimizer steps and "
        "measure each snapshot on a fixed random subset of D (0 = off).",
    )
    subset: int = opt(1000, "Examples of D (a seeded random subset) the snapshots are measured on.")


@dataclass(frozen=True, kw_only=True)
class FeaturizeSection:
    """Corpus features of D against the suffix-array index of the whole corpus."""

    enabled: bool = opt(True, "Compute corpus features.")
    ngram: list[int] = opt_list(lambda: [8], "n for ngram_overlap_<n>.")


@dataclass(frozen=True, kw_only=True)
class ScanSection:
    """Verbatim corpus spans in the teacher's hard-distillation continuations (``kdmem scan``
    of the generated tokens against the run's index); runs when ``[hard]`` is enabled."""

    enabled: bool = opt(True, "Scan the teacher's continuations (only with [hard] enabled).")
    min_len: int = opt(
        0,
        "Shortest span reported, in tokens (0: data.suffix, the length whose exact "
        "reproduction makes an example memorized; paper: 50).",
    )
    max_locations: int = opt(16, "Corpus locations kept per span.")

    def validate(self) -> None:
        for name in ("min_len", "max_locations"):
            if getattr(self, name) < 0:
                raise ConfigError(f"invalid scan.{name} = {getattr(self, name)}: must be >= 0")


@dataclass(frozen=True, kw_only=True)
class PredictSection:
    """Logistic-regression predictor of student memorization."""

    features: list[str] = opt_list(
        lambda: ["zlib_bytes", "ppl_teacher", "ppl_baseline", "kl_teacher_baseline"],
        "Feature names (docs/run_dir.md).",
    )
    corpus_features: bool = opt(
        False, "Add log1p duplicate counts and longest-match features from features.parquet."
    )
    target: str = opt("student_soft", "Student role to predict.")
    resamples: int = opt(100, "Resamples of the paper protocol.")
    negatives_per_positive: int = opt(3, "Negatives sampled per positive (paper: 3).")
    test_fraction: float = opt(0.3, "Held-out fraction per resample (paper: 0.3).")
    seed: int = opt(0, "Seed of the resamples.")
    target_recall: float = opt(
        0.95,
        "Recall (out-of-fold, natural prevalence) the natural model's flagging threshold is "
        "chosen for.",
    )


@dataclass(frozen=True, kw_only=True)
class FilterSection:
    """Pre-filtering: drop the examples the predictor flags, re-distill, measure again."""

    enabled: bool = opt(True, "Run the pre-filtering experiment.")
    model: Literal["paper", "natural"] = opt(
        "paper",
        "Which saved predictor flags: 'paper' (fit under the paper's 1:3 protocol, threshold "
        "0.5, the paper's pre-filtering) or 'natural' (fit at natural prevalence, threshold "
        "for predict.target_recall).",
    )
    threshold: float | None = opt(
        None, "Flag at predicted probability >= this (default: the model's own threshold)."
    )


@dataclass(frozen=True, kw_only=True)
class LaunchSection:
    """How ``kdmem run`` starts every model pass (training, teacher generation, measurement):
    ``python -m torch.distributed.run`` with ``nproc_per_node`` processes on each of ``nnodes``
    nodes (one process per GPU), or in the ``kdmem run`` process itself when both are 1."""

    nproc_per_node: int = opt(
        1, "Processes (GPUs) per node of each model pass; 1 = in the kdmem run process itself."
    )
    nnodes: int = opt(
        1, "Nodes per model pass; more than 1 needs a scheduler (kdmem run --emit-slurm)."
    )
    strategy: Distributed = opt(
        "ddp", "How the trained model is spread over the processes: ddp (replicas) or fsdp."
    )
    teacher_shard: Literal["none", "fsdp", "fsdp_offload"] = opt(
        "none",
        "Shard the frozen teacher of soft/argmax distillation with FSDP2 (fsdp_offload: in "
        "CPU memory between uses); needs strategy = 'fsdp'.",
    )
    global_batch: int = opt(
        0,
        "Sequences per optimizer step over all processes (0: batch_size x grad_accum x "
        "processes); when set, each section's grad_accum = global_batch / (batch_size x "
        "processes), so changing the process count keeps the training the same.",
    )
    backend: Literal["auto", "nccl", "gloo"] = opt(
        "auto",
        "Process-group backend: auto = NCCL on CUDA, gloo on CPU; nccl without CUDA falls "
        "back to gloo with a warning.",
    )

    @property
    def world_size(self) -> int:
        """Processes of one model pass over all nodes."""
        return self.nproc_per_node * self.nnodes

    def grad_accum(self, section: Optim) -> int:
        """The micro-batches per optimizer step of ``section`` under this launch."""
        if not self.global_batch:
            return section.grad_accum
        return self.global_batch // (section.batch_size * self.world_size)

    def validate(self) -> None:
        for name in ("nproc_per_node", "nnodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid launch.{name} = {getattr(self, name)}: must be >= 1")
        if self.global_batch < 0:
            raise ConfigError(
                f"invalid launch.global_batch = {self.global_batch}: must be >= 0 (0 = not fixed)"
            )
        if self.teacher_shard != "none" and self.strategy != "fsdp":
            raise ConfigError(
                f"launch.teacher_shard = {self.teacher_shard!r} needs launch.strategy = 'fsdp' "
                f"(now {self.strategy!r}): the teacher is sharded over the student's FSDP "
                "processes; set both, or teacher_shard = 'none'"
            )


@dataclass(frozen=True, kw_only=True)
class SlurmSection:
    """What ``kdmem run EXP.toml --emit-slurm DIR`` writes into every sbatch script."""

    options: list[str] = opt_list(
        list, 'Extra #SBATCH options of every job, e.g. ["--partition=gpu", "--time=48:00:00"].'
    )
    cpus_per_task: int = opt(8, "CPUs of each corpus job and of each model-pass process.")
    array_tasks: int = opt(
        16,
        "Tasks of each corpus array (index, featurize): task t handles the planned groups of "
        "shards g = t mod tasks (kdmem index DIR --groups lists them).",
    )
    rdzv_port: int = opt(29500, "torchrun rendezvous port on the first node of each model job.")
    python: str = opt(
        "", "Python of the kdmem install on the compute nodes (default: the emitting one)."
    )

    def validate(self) -> None:
        for name in ("cpus_per_task", "array_tasks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid slurm.{name} = {getattr(self, name)}: must be >= 1")
        if not 0 < self.rdzv_port < 65536:
            raise ConfigError(f"invalid slurm.rdzv_port = {self.rdzv_port}: use 1..65535")


def _optim(epochs: int) -> Any:
    return field(
        default_factory=lambda: Optim(epochs=epochs),
        metadata={"help": f"Cross-entropy fine-tuning ({epochs} epochs by default)."},
    )


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """A whole study (``kdmem run``); see ``configs/`` for the paper's settings."""

    run: RunSection
    data: DataSection
    models: ModelsSection
    teacher: Optim = _optim(3)
    baseline: Optim = _optim(4)
    soft: SoftSection = field(default_factory=SoftSection)
    hard: HardSection = field(default_factory=HardSection)
    measure: MeasureSection = field(default_factory=MeasureSection)
    featurize: FeaturizeSection = field(default_factory=FeaturizeSection)
    scan: ScanSection = field(default_factory=ScanSection)
    predict: PredictSection = field(default_factory=PredictSection)
    filter: FilterSection = field(default_factory=FilterSection)
    launch: LaunchSection = field(default_factory=LaunchSection)
    slurm: SlurmSection = field(default_factory=SlurmSection)

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
        generated = self.hard.gen_len - d.prefix
        if self.hard.enabled and self.scan.enabled and self.scan_min_len() > generated:
            raise ConfigError(
                f"invalid scan.min_len = {self.scan.min_len} (spans of at least "
                f"{self.scan_min_len()} tokens; 0 means data.suffix): the continuations have "
                f"hard.gen_len - data.prefix = {generated} generated tokens; set scan.min_len "
                f"<= {generated}, or scan.enabled = false"
            )
        if not self.run.seeds:
            raise ConfigError("invalid run.seeds = []: give at least one seed, e.g. [0]")
        for t in self.soft.temperatures:
            if t <= 0:
                raise ConfigError(f"invalid soft.temperatures entry {t}: temperatures are > 0")
        self.check_global_batch()

    def scan_min_len(self) -> int:
        """The shortest span the scan stage reports: ``scan.min_len``, or ``data.suffix``."""
        return self.scan.min_len or self.data.suffix

    def training_sections(self) -> dict[str, Optim]:
        """The enabled training sections by name (teacher, baseline, soft, hard)."""
        out: dict[str, Optim] = {"teacher": self.teacher, "baseline": self.baseline}
        if self.soft.enabled:
            out["soft"] = self.soft
        if self.hard.enabled:
            out["hard"] = self.hard
        return out

    def check_global_batch(self) -> None:
        """``launch.global_batch`` must split evenly over every section's micro-batch and the
        processes (one line naming the section and the numbers otherwise)."""
        g, world = self.launch.global_batch, self.launch.world_size
        if not g:
            return
        for name, sec in self.training_sections().items():
            per_step = sec.batch_size * world
            if g % per_step:
                raise ConfigError(
                    f"launch.global_batch = {g} is not a multiple of [{name}] batch_size "
                    f"{sec.batch_size} x {world} processes = {per_step}; choose a global batch "
                    f"that is, e.g. {max(per_step, g - g % per_step)}, or another batch_size"
                )


# ---- the loader -------------------------------------------------------------------------------


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
        raise ConfigError(f"invalid {name} = {value!r}: expected int, got bool")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(
            f"invalid {name} = {value!r}: expected {tp.__name__}, got {type(value).__name__}"
        )
    return value


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "", *, flags: bool = False) -> T:
    """Build config class ``cls`` from a mapping (a TOML table, CLI options), then validate.

    Unknown keys and wrong types raise :class:`~kdmem.errors.ConfigError` naming the valid
    keys; ``flags`` names missing required fields as CLI options (``--model``)."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        bad = ", ".join(prefix + u for u in unknown)
        if flags:
            what = f"unknown {cls.__name__} key(s) {bad}"
        else:
            where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            what = f"unknown key(s) {bad} in {where}"
        raise ConfigError(f"{what}; valid keys: {', '.join(names)}")
    checked = {k: _check(prefix + k, v, hints[k]) for k, v in values.items()}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in checked
    ]
    if missing:
        shown = ["--" + m.replace("_", "-") if flags else prefix + m for m in missing]
        what = f"{cls.__name__} " if flags else ""
        raise ConfigError(f"missing required {what}key(s): {', '.join(shown)}")
    obj = cls(**checked)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """A recipe config from a mapping (:func:`from_dict` with CLI-style names)."""
    return from_dict(cls, values, flags=True)


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


def read_toml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A TOML file as a dict; one-line errors for a missing or invalid file."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} not found; pass the path of a TOML file") from None
    except OSError as e:
        raise KdmemIOError(f"cannot read {what} {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML ({e}); fix the file") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override, type-check and validate an experiment TOML file."""
    values = read_toml(path, "experiment config")
    return from_dict(ExperimentConfig, apply_overrides(values, overrides or []))


def load_recipe(cls: type[C], path: str | Path | None, options: dict[str, Any]) -> C:
    """A recipe config from ``--config FILE.toml`` (optional) and command-line ``options``
    (``None`` = not given; those win over the file)."""
    values = read_toml(path, "--config") if path else {}
    values.update({k: v for k, v in options.items() if v is not None})
    return config_from_dict(cls, values)


def _drop_none(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    return v


def to_toml(cfg: ExperimentConfig) -> str:
    """The resolved config as TOML (``None`` values are omitted: they mean the default)."""
    return tomli_w.dumps(_drop_none(dataclasses.asdict(cfg)))


def recipe_to_toml(cfg: OptimConfig) -> str:
    """A recipe config as the TOML ``kdmem train|distill --config FILE`` reads back (``None``
    values are omitted: they mean the default)."""
    return tomli_w.dumps(_drop_none(dataclasses.asdict(cfg)))
