"""``kdmem run EXP.toml --emit-slurm DIR``: the stage graph as Slurm batch jobs.

What DIR receives::

    config.toml        the resolved experiment config every job reads
    jobs/NN-<job>.sbatch
                       one job per stage, in dependency order: the corpus and analysis
                       stages as one CPU task; every model pass (training, teacher
                       generation, measurement) on launch.nnodes nodes with
                       launch.nproc_per_node GPUs each, where the stage starts
                       `srun torchrun` across the allocation (kdmem run --launcher srun);
                       the corpus stages first as job arrays whose parts the stage job
                       then merges: shard over contiguous slices of the corpus inputs
                       (kdmem shard --task K --tasks T --partial-out), index, featurize
                       and scan over the planned groups of index shards (`kdmem index
                       --groups`; task t of slurm.array_tasks takes groups t, t + T, ...:
                       kdmem index --group K, kdmem featurize --group K --partial-out;
                       scan in two arrays, its two rounds: --partial-out, then --lm
                       --partial-out)
    submit.sh          submits them in order, each with --dependency=afterok on the jobs
                       of its inputs
    logs/              where Slurm writes each job's output (%x-%j.out)

Every stage job runs ``kdmem run DIR/config.toml --run-dir RUN --stage NAME --launcher srun``:
the same stage function as a local run, so the run directory (manifest, tables, report)
comes out the same; the manifest is updated under a lock, so jobs may run at once. A failed
job leaves its stage resumable: resubmit it (or rerun submit.sh: finished stages are
skipped in seconds).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from kdmem.atomic import write_bytes_atomic
from kdmem.config import ExperimentConfig, to_toml
from kdmem.errors import InvalidArgumentError
from kdmem.pipeline import Stage
from kdmem.rundir import Layout
from kdmem.study.plan import model_passes
from kdmem.study.stages import corpus_inputs, shard_options

__all__ = ["emit_slurm"]

# stage -> its array jobs (<name>-parts), run in this order before the stage job
ARRAY_STAGES: dict[str, tuple[str, ...]] = {
    "shard": ("shard",),
    "index": ("index",),
    "featurize": ("featurize",),
    "scan": ("scan-lm", "scan-hits"),
}


def _header(name: str, cfg: ExperimentConfig, lines: list[str]) -> list[str]:
    return [
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name=kdmem-{cfg.run.name}-{name}",
        "#SBATCH --output=logs/%x-%j.out",
        *[f"#SBATCH {x}" for x in lines],
        *[f"#SBATCH {x}" for x in cfg.slurm.options],
        "set -euo pipefail",
    ]


def _array_body(stage: str, cfg: ExperimentConfig, rd: Path, py: str) -> list[str]:
    """One task of the array of ``stage`` over the planned groups of shards (``kdmem index
    --groups``, the same plan in every task): groups g = task, task + T, ..., each a whole
    unit, so no unit is built or searched by two tasks."""
    lay = Layout(rd)
    t = cfg.slurm.array_tasks
    q = shlex.quote
    lines = [
        f"NG=$({py} -m kdmem index {q(str(lay.shards))} --groups | wc -l)",
        "ARGS=()",
        f'for ((g = SLURM_ARRAY_TASK_ID; g < NG; g += {t})); do ARGS+=(--group "$g"); done',
        '[ ${#ARGS[@]} -eq 0 ] && { echo "no group for this task (${NG} planned)"; exit 0; }',
    ]
    threads = f"--threads {cfg.slurm.cpus_per_task}"
    if stage == "index":
        lines.append(f'{py} -m kdmem index {q(str(lay.shards))} "${{ARGS[@]}}" {threads}')
    elif stage in ("scan-lm", "scan-hits"):
        hits = stage == "scan-hits"
        rounds = (
            f"--min-len {cfg.scan_min_len()} --max-locations {cfg.scan.max_locations} "
            f"--lm {q(str(lay.parts('scan-lm')))} "
            if hits
            else ""
        )
        lines.append(
            f"{py} -m kdmem scan {q(str(lay.continuations))} --index {q(str(lay.shards))} "
            f'{rounds}"${{ARGS[@]}}" --partial-out {q(str(lay.parts(stage)))} {threads}'
        )
    else:
        ngram = " ".join(f"--ngram {n}" for n in cfg.featurize.ngram)
        lines.append(
            f"{py} -m kdmem featurize {q(str(lay.study))} --index {q(str(lay.shards))} "
            f"--prefix {cfg.data.prefix} --suffix {cfg.data.suffix} {ngram} "
            f"--tokenizer {q(str(lay.tokenizer_json))} "
            f'"${{ARGS[@]}}" --partial-out {q(str(lay.parts("featurize")))} {threads}'
        )
    return lines


def _shard_array_body(cfg: ExperimentConfig, rd: Path, py: str) -> list[str]:
    """One task of the shard array: the task-th contiguous slice of the corpus inputs
    (:mod:`kdmem.corpus.shard_tasks`; a task whose slice is empty exits 0 with a note)."""
    lay = Layout(rd)
    q = shlex.quote
    opts = " ".join(
        f"--{k.replace('_', '-')} {q(str(v))}"
        for k, v in shard_options(cfg).items()
        if v is not None
    )
    return [
        f"{py} -m kdmem shard {' '.join(q(s) for s in corpus_inputs(cfg))} "
        f"--tokenizer {q(str(lay.tokenizer_json))} --tasks {cfg.slurm.array_tasks} "
        f'--task "$SLURM_ARRAY_TASK_ID" --partial-out {q(str(lay.parts("shard")))} {opts} '
        f"--threads {cfg.slurm.cpus_per_task}"
    ]


def emit_slurm(
    cfg: ExperimentConfig,
    stages: list[Stage],
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
) -> Path:
    """Write the Slurm jobs of ``stages`` (from :func:`kdmem.study.build_stages`) into
    ``out``; returns the path of ``submit.sh``.

    Raises :class:`~kdmem.errors.InvalidArgumentError` when ``out`` is not empty (unless
    ``force``: then the files of an earlier emission are replaced)."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise InvalidArgumentError(f"--emit-slurm {d}: exists and is not a directory")
    if d.is_dir() and any(d.iterdir()) and not force:
        raise InvalidArgumentError(
            f"--emit-slurm {d} is not empty; choose an empty directory or add --force to "
            "replace the jobs written there"
        )
    rd = Path(run_dir).resolve()
    py = shlex.quote(cfg.slurm.python or sys.executable)
    cwd = shlex.quote(str(Path.cwd()))
    (d / "jobs").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(exist_ok=True)
    if force:
        for old in (d / "jobs").glob("*.sbatch"):
            old.unlink()
    conf = (d / "config.toml").resolve()
    write_bytes_atomic(conf, to_toml(cfg).encode("utf-8"))
    passes = model_passes(cfg)
    la = cfg.launch
    run = (
        f"{py} -m kdmem run {shlex.quote(str(conf))} --run-dir {shlex.quote(str(rd))} "
        "--launcher srun --stage"
    )
    jobs: list[tuple[str, str, list[str]]] = []  # (job, file, jobs it waits for)
    job_of: dict[str, str] = {}  # stage -> its job

    def write(job: str, lines: list[str], after: list[str]) -> None:
        name = f"{len(jobs) + 1:02d}-{job}.sbatch"
        write_bytes_atomic(d / "jobs" / name, ("\n".join(lines) + "\n").encode("utf-8"))
        jobs.append((job, name, after))

    cpu = [f"--nodes=1 --ntasks=1 --cpus-per-task={cfg.slurm.cpus_per_task}"]
    for s in stages:
        after = sorted({job_of[dep] for dep in s.deps if dep in job_of})
        body = [f"cd {cwd}"]
        for job in ARRAY_STAGES.get(s.name, ()):
            part = f"{job}-parts"
            array = [f"--array=0-{cfg.slurm.array_tasks - 1}", *cpu]
            task = (
                _shard_array_body(cfg, rd, py) if job == "shard" else _array_body(job, cfg, rd, py)
            )
            write(part, _header(part, cfg, array) + body + task, after)
            after = [part]
        if s.name in passes:
            gpus = cfg.run.device is None or cfg.run.device.startswith("cuda")
            res = [
                f"--nodes={la.nnodes} --ntasks-per-node=1 "
                + (f"--gpus-per-node={la.nproc_per_node} " if gpus else "")
                + f"--cpus-per-task={cfg.slurm.cpus_per_task * la.nproc_per_node}"
            ]
        else:
            res = cpu
        write(s.name, _header(s.name, cfg, res) + body + [f"{run} {s.name}"], after)
        job_of[s.name] = s.name

    sub = [
        "#!/usr/bin/env bash",
        f"# Submit the kdmem study {cfg.run.name!r} (run directory {rd}) as Slurm jobs, in",
        "# dependency order; written by `kdmem run --emit-slurm`. Rerunning it resubmits every",
        "# job; stages already done finish in seconds.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "declare -A J",
        "submit() {  # submit JOB FILE [JOBS IT WAITS FOR...]",
        '  local job=$1 file=$2 dep="" id; shift 2',
        '  for a in "$@"; do dep+=":${J[$a]}"; done',
        '  if [ -n "$dep" ]; then',
        '    id=$(sbatch --parsable --dependency="afterok$dep" "$file")',
        "  else",
        '    id=$(sbatch --parsable "$file")',
        "  fi",
        "  J[$job]=${id%%;*}",
        '  echo "$job: job ${J[$job]}"',
        "}",
    ]
    for job, name, after in jobs:
        sub.append(f"submit {job} jobs/{name} {' '.join(after)}".rstrip())
    sub.append(f'echo "submitted {len(jobs)} jobs; run directory {rd}"')
    path = d / "submit.sh"
    write_bytes_atomic(path, ("\n".join(sub) + "\n").encode("utf-8"))
    path.chmod(0o755)
    return path
