"""``kdmem run EXP.toml --plan``: per stage, what would run and why, and -- for the model
passes -- parameters, bytes per GPU, whether that fits, the ``[launch]`` change that would
make it fit, and the optimizer steps and examples it processes.

Only model configs are read (:func:`kdmem.launch.memory.read_shape`: ``config.json``, the
parameters counted on the meta device), so a paper config can be planned offline when its
``[models]`` name local directories. ``kdmem run`` refuses, before the first stage, a config
with a stage that would run and does not fit the devices in view (:func:`check_fits`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kdmem.config import ExperimentConfig, Optim
from kdmem.errors import DoesNotFitError, KdmemIOError
from kdmem.launch.devices import Devices
from kdmem.launch.memory import (
    Bytes,
    ModelShape,
    generate_bytes,
    measure_bytes,
    read_shape,
    train_bytes,
)
from kdmem.pipeline import StagePlan

__all__ = [
    "FIT_FRACTION",
    "PassSpec",
    "StageEstimate",
    "check_fits",
    "estimate_stages",
    "format_plan",
    "model_passes",
    "plan_json",
    "usable_bytes",
]

# A pass fits when its estimate is at most this fraction of the device memory: the rest is
# for the CUDA context, the allocator's fragmentation and kernel workspaces.
FIT_FRACTION = 0.9
GEN_BATCH = 32  # DistillConfig.gen_batch_size's default (hard-distillation generation)


@dataclass(frozen=True)
class PassSpec:
    """The model pass of one stage: ``kind`` train (CE: finetune), soft (soft distillation),
    hard (teacher generation, then CE on its continuations) or measure; ``model`` and
    ``teacher`` / ``reference`` name ``[models]`` entries (teacher or student)."""

    kind: str
    model: str
    section: str = ""
    teacher: str = ""
    reference: str = ""
    filtered: bool = False
    subset: bool = False  # measured on measure.subset examples of D (per snapshot)


def model_passes(cfg: ExperimentConfig) -> dict[str, PassSpec]:
    """The stages of :func:`kdmem.study.build_stages` that run a model pass, by name."""
    c = cfg
    out: dict[str, PassSpec] = {"teacher": PassSpec("train", "teacher", "teacher")}
    seeds = list(c.run.seeds)
    roles: dict[str, str] = {"teacher": "teacher"}
    for k in seeds:
        out[f"baseline_seed{k}"] = PassSpec("train", "student", "baseline")
        roles[f"baseline_seed{k}"] = "student"
    if c.soft.enabled:
        for k in seeds:
            out[f"student_soft_seed{k}"] = PassSpec("soft", "student", "soft", "teacher")
        for t in c.soft.temperatures:
            if t != c.soft.temperature:
                out[f"student_soft_T{t:g}_seed{seeds[0]}"] = PassSpec(
                    "soft", "student", "soft", "teacher"
                )
    if c.hard.enabled:
        for k in seeds:
            out[f"student_hard_seed{k}"] = PassSpec("hard", "student", "hard", "teacher")
    if c.filter.enabled and c.soft.enabled:
        out[f"student_soft_filtered_seed{seeds[0]}"] = PassSpec(
            "soft", "student", "soft", "teacher", filtered=True
        )
    ref = f"baseline_seed{seeds[0]}"
    trained = list(out.items())
    for role, spec in trained:
        if role == ref:
            continue
        paired = role == "teacher"
        out[f"measure_{role}"] = PassSpec(
            "measure",
            spec.model if spec.kind == "train" else "student",
            reference="student" if paired else "",
            filtered=spec.filtered,
        )
    if c.measure.every_steps:  # each kept snapshot measured on the subset
        for role, spec in trained:
            if not spec.filtered:
                out[f"steps_{role}"] = PassSpec("measure", spec.model, subset=True)
    return out


@dataclass
class StageEstimate:
    """One stage of the plan: what the pipeline would do, and for a model pass the memory
    estimate on one device, whether it fits, and the work it does."""

    name: str
    action: str
    reason: str
    kind: str = "cpu"
    params: int | None = None
    bytes: Bytes | None = None
    fits: bool | None = None
    steps: int | None = None
    examples: int | None = None
    phase: str = ""
    suggestion: str = ""
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_gpu(self) -> int | None:
        return None if self.bytes is None else self.bytes.total

    def asdict(self) -> dict[str, Any]:
        d = {
            "name": self.name,
            "action": self.action,
            "reason": self.reason,
            "kind": self.kind,
            "params": self.params,
            "bytes_per_gpu": self.bytes_per_gpu,
            "bytes": None if self.bytes is None else self.bytes.asdict(),
            "fits": self.fits,
            "steps": self.steps,
            "examples": self.examples,
        }
        for k in ("phase", "suggestion", "note"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        return d


def _section(cfg: ExperimentConfig, name: str) -> Optim:
    sec: Optim = getattr(cfg, name)
    return sec


def _pass_bytes(
    cfg: ExperimentConfig, spec: PassSpec, shapes: dict[str, ModelShape]
) -> tuple[Bytes, str, int]:
    """(bytes on one device, the phase that peaks, parameters of the model it trains or
    measures) under ``cfg.launch``."""
    la = cfg.launch
    model = shapes[spec.model]
    if spec.kind == "measure":
        b = measure_bytes(
            model,
            batch=cfg.measure.batch_size or 1,
            window=cfg.data.prefix + cfg.data.suffix,
            reference=shapes[spec.reference] if spec.reference else None,
        )
        return b, "", model.params
    sec = _section(cfg, spec.section)
    seq = cfg.hard.gen_len if spec.kind == "hard" else cfg.data.seq_len
    seq = min(seq, cfg.data.seq_len)
    common: dict[str, Any] = dict(
        batch=sec.batch_size,
        seq=seq,
        precision=cfg.run.precision,
        strategy=la.strategy,
        world=la.world_size,
        grad_accum=la.grad_accum(sec),
        chunk=sec.chunk_size,
    )
    if spec.kind == "soft":
        b = train_bytes(
            model,
            **common,
            teacher=shapes[spec.teacher],
            teacher_precision=cfg.run.precision,
            teacher_shard=la.teacher_shard,
        )
        return b, "", model.params
    b = train_bytes(model, **common)
    if spec.kind == "hard":
        g = generate_bytes(
            shapes[spec.teacher], batch=GEN_BATCH, total_len=cfg.hard.gen_len, dtype="float32"
        )
        if g.total > b.total:
            return g, "teacher generation", model.params
        return b, "training", model.params
    return b, "", model.params


def _work(cfg: ExperimentConfig, spec: PassSpec) -> tuple[int, int]:
    """(optimizer steps, examples) of a pass; the filtered set is at most D."""
    n = cfg.data.n_examples
    if spec.kind == "measure":
        return 0, min(n, cfg.measure.subset) if spec.subset else n
    sec = _section(cfg, spec.section)
    g = sec.batch_size * cfg.launch.grad_accum(sec) * cfg.launch.world_size
    per_epoch = n // g if sec.drop_last else -(-n // g)  # every example every epoch
    return sec.epochs * per_epoch, n


def _variants(cfg: ExperimentConfig, spec: PassSpec, gpus: int, nodes: int) -> Iterator[str]:
    """Candidate changes, cheapest first, as ``key=value`` overrides."""
    la = cfg.launch
    distill = spec.kind == "soft"
    shards = ["fsdp", "fsdp_offload"] if distill else ["none"]
    seen: set[tuple[int, int, str, str]] = set()
    worlds = [(la.nproc_per_node, la.nnodes)]
    worlds += [(p, la.nnodes) for p in range(la.nproc_per_node + 1, gpus + 1)]
    worlds += [(gpus, n) for n in range(la.nnodes + 1, nodes + 1)]
    for p, n in worlds:
        for strat, ts in [(la.strategy, la.teacher_shard)] + [("fsdp", t) for t in shards]:
            key = (p, n, strat, ts)
            if key in seen:
                continue
            seen.add(key)
            yield _override(la, p, n, strat, ts)


def _override(la: Any, p: int, n: int, strat: str, ts: str) -> str:
    parts = []
    if p != la.nproc_per_node:
        parts.append(f"launch.nproc_per_node={p}")
    if n != la.nnodes:
        parts.append(f"launch.nnodes={n}")
    if strat != la.strategy:
        parts.append(f"launch.strategy={strat}")
    if ts != la.teacher_shard:
        parts.append(f"launch.teacher_shard={ts}")
    return " ".join(parts)


def _apply(cfg: ExperimentConfig, overrides: str) -> ExperimentConfig:
    """``cfg`` with ``launch.*`` / ``<section>.*`` overrides (as :func:`_override` writes
    them), keeping the global batch when the process count changes."""
    la = cfg.launch
    new: dict[str, Any] = {}
    secs: dict[str, dict[str, Any]] = {}
    for ov in overrides.split():
        key, _, raw = ov.partition("=")
        sec, _, name = key.partition(".")
        value: Any = raw.strip('"')
        if name in ("nproc_per_node", "nnodes", "batch_size", "grad_accum", "global_batch"):
            value = int(value)
        if sec == "launch":
            new[name] = value
        else:
            secs.setdefault(sec, {})[name] = value
    launch = dataclasses.replace(la, **new)
    out = dataclasses.replace(cfg, launch=launch)
    for sec, vals in secs.items():
        out = dataclasses.replace(out, **{sec: dataclasses.replace(getattr(out, sec), **vals)})
    return out


def _suggest(
    cfg: ExperimentConfig,
    spec: PassSpec,
    shapes: dict[str, ModelShape],
    budget: int,
    gpus: int,
    nodes: int,
) -> str:
    """The first change (cheapest first) under which the pass fits, or ""."""
    for ov in _variants(cfg, spec, gpus, nodes):
        if not ov:
            continue
        alt = _apply(cfg, ov)
        if _pass_bytes(alt, spec, shapes)[0].total <= budget:
            world = alt.launch.world_size
            if world != cfg.launch.world_size and not cfg.launch.global_batch:
                sec = _section(cfg, spec.section) if spec.section else None
                if sec is not None:
                    g = sec.batch_size * sec.grad_accum * cfg.launch.world_size
                    if g % (sec.batch_size * world) == 0:
                        ov += f" launch.global_batch={g}"
            return ov
    if spec.kind in ("train", "soft", "hard"):
        sec = _section(cfg, spec.section)
        b, a = sec.batch_size, cfg.launch.grad_accum(sec)
        while b > 1:
            b, a = b // 2, a * 2
            ov = f"{spec.section}.batch_size={b} {spec.section}.grad_accum={a}"
            for launch_ov in [""] + [v for v in _variants(cfg, spec, gpus, nodes) if v]:
                alt = _apply(cfg, f"{ov} {launch_ov}".strip())
                if _pass_bytes(alt, spec, shapes)[0].total <= budget:
                    return f"{ov} {launch_ov}".strip()
    return ""


def _shapes(cfg: ExperimentConfig) -> tuple[dict[str, ModelShape], str]:
    shapes: dict[str, ModelShape] = {}
    notes = []
    for role in ("teacher", "student"):
        name = getattr(cfg.models, role)
        try:
            shapes[role] = read_shape(name)
        except KdmemIOError as e:
            notes.append(str(e))
    return shapes, "; ".join(notes)


def usable_bytes(cfg: ExperimentConfig, devices: Devices) -> int:
    """What one process may use: :data:`FIT_FRACTION` of a GPU, or of the RAM a CPU node's
    processes share."""
    per_process = devices.memory
    if devices.kind == "cpu":
        per_process //= max(1, cfg.launch.nproc_per_node)
    return int(per_process * FIT_FRACTION)


def estimate_stages(
    cfg: ExperimentConfig,
    plans: list[StagePlan],
    devices: Devices,
    *,
    gpus_per_node: int,
    nodes: int,
) -> list[StageEstimate]:
    """The memory plan of every stage of ``plans`` on ``devices`` (one device of
    ``devices.memory`` bytes per process; on CPU the processes of a node share the RAM)."""
    passes = model_passes(cfg)
    shapes, note = _shapes(cfg)
    budget = usable_bytes(cfg, devices)
    out = []
    for p in plans:
        est = StageEstimate(p.stage.name, p.action, p.reason)
        spec = passes.get(p.stage.name)
        if spec is not None:
            est.kind = spec.kind
            need = [spec.model, spec.teacher, spec.reference]
            if all(not r or r in shapes for r in need):
                b, phase, params = _pass_bytes(cfg, spec, shapes)
                est.bytes, est.phase, est.params = b, phase, params
                est.fits = b.total <= budget
                est.steps, est.examples = _work(cfg, spec)
                if spec.filtered:
                    est.note = "examples and steps at most these (the filtered set)"
                if spec.subset:
                    est.note = "per kept snapshot (measure.every_steps)"
                if not est.fits:
                    est.suggestion = _suggest(cfg, spec, shapes, budget, gpus_per_node, nodes)
            else:
                est.note = note
        out.append(est)
    return out


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}"


def _size(n: int) -> str:
    """Bytes as G / M / K (binary units)."""
    if n == 0:
        return "0"
    for unit, scale in (("G", 2**30), ("M", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n / 2**10:.0f}K"


def _count(n: int) -> str:
    """Parameters as B / M / K."""
    for unit, scale in (("B", 10**9), ("M", 10**6)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}" if unit == "B" else f"{n / scale:.0f}{unit}"
    return f"{n / 10**3:.0f}K"


def format_plan(
    ests: list[StageEstimate], cfg: ExperimentConfig, devices: Devices, gpus: int, nodes: int
) -> Iterator[str]:
    """The plan as text lines."""
    la = cfg.launch
    yield (
        f"launch: {la.nproc_per_node} process(es) x {la.nnodes} node(s), strategy "
        f"{la.strategy}, teacher_shard {la.teacher_shard}; devices: {gpus} per node x {nodes} "
        f"node(s), {devices.memory / 2**30:.0f} GiB each"
        + (" (CPU RAM shared by the processes)" if devices.kind == "cpu" else "")
        + f"; fits = estimate <= {FIT_FRACTION:.0%} of that"
    )
    yield (
        f"{'action':7s} {'stage':36s} {'params':>8s} {'per GPU':>8s} {'weights':>7s} "
        f"{'grads':>6s} {'AdamW':>6s} {'activ':>6s} {'teacher':>7s} {'fits':>4s} "
        f"{'steps':>8s} {'examples':>9s}  why"
    )
    for e in ests:
        b = e.bytes
        if b is None:
            cols = (
                f"{'':8s} {'':8s} {'':7s} {'':6s} {'':6s} {'':6s} {'':7s} {'':4s} {'':8s} {'':9s}"
            )
        else:
            cols = (
                f"{_count(e.params or 0):>8s} {_size(b.total):>8s} {_size(b.weights):>7s} "
                f"{_size(b.grads):>6s} {_size(b.optimizer):>6s} {_size(b.activations):>6s} "
                f"{_size(b.teacher):>7s} {'yes' if e.fits else 'NO':>4s} {e.steps or 0:8d} "
                f"{e.examples or 0:9d}"
            )
        yield f"{e.action:7s} {e.name:36s} {cols}  {e.reason}" + (
            f" [{e.phase} peaks]" if e.phase else ""
        )
    for e in ests:
        if e.fits is False:
            fix = e.suggestion or "no [launch] change within the given devices; more GPUs"
            yield f"does not fit: {e.name}: {_size(e.bytes_per_gpu or 0)} per device; try: {fix}"
    notes = sorted({e.note for e in ests if e.note and e.bytes is None})
    for n in notes:
        yield f"note: memory not estimated: {n}"


def plan_json(
    ests: list[StageEstimate], cfg: ExperimentConfig, devices: Devices, gpus: int, nodes: int
) -> dict[str, Any]:
    """The plan as one JSON-able object with a ``stages`` list."""
    return {
        "launch": dataclasses.asdict(cfg.launch),
        "devices": {
            "kind": devices.kind,
            "per_node": gpus,
            "nodes": nodes,
            "memory_bytes": devices.memory,
            "fit_fraction": FIT_FRACTION,
        },
        "stages": [e.asdict() for e in ests],
    }


def check_fits(
    cfg: ExperimentConfig,
    plans: list[StagePlan],
    devices: Devices,
    log: Callable[[str], None] = print,
) -> None:
    """Refuse (:class:`~kdmem.errors.DoesNotFitError`, one line) a config with a stage that
    would run and whose estimate does not fit ``devices``; stages whose model configs cannot
    be read yet (made by an earlier stage) are not checked."""
    ests = estimate_stages(
        cfg, plans, devices, gpus_per_node=devices.count, nodes=cfg.launch.nnodes
    )
    for e in ests:
        if e.action != "skip" and e.fits is False:
            fix = e.suggestion or "more or larger devices"
            unit = "process" if devices.kind == "cpu" else "GPU"
            raise DoesNotFitError(
                f"stage {e.name} needs about {_gib(e.bytes_per_gpu)} GiB per {unit} but "
                f"{_gib(usable_bytes(cfg, devices))} GiB are usable ({devices.describe()}); "
                f"try {fix} (kdmem run EXP.toml --plan shows every stage)"
            )
    # On GPUs say which passes went unchecked; a CPU run (the demo builds its own models in
    # its first stages) has the machine's memory and swap, and nothing to say here.
    unchecked = any(e.kind != "cpu" and e.bytes is None and e.action != "skip" for e in ests)
    if unchecked and devices.kind != "cpu":
        log("kdmem: memory of some model passes not checked: model configs not readable yet")
