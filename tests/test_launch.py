"""``[launch]``: config checks, the launcher's failure report, per-rank logs, the memory plan
(parameters counted from configs alone, bytes per GPU, fits, suggestions, refusal), Slurm
emission and the pipeline's one-stage mode (the fast checks; the multi-process proofs are
in test_scale_cpu.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kdmem.cli import run as cli
from kdmem.config import load_config
from kdmem.errors import ConfigError, InvalidArgumentError, MissingStageInputError

MINIMAL = """
[run]
name = "t"
device = "cpu"
[data]
corpus = ["c.jsonl"]
tokenizer = "tok"
[models]
teacher = "T"
student = "S"
"""


def _cfg(tmp_path: Path, extra: str = "", overrides: list[str] | None = None):  # type: ignore[no-untyped-def]
    (tmp_path / "e.toml").write_text(MINIMAL + extra)
    return load_config(tmp_path / "e.toml", overrides)


# ---- [launch] in the config ------------------------------------------------------------------


def test_launch_defaults_keep_one_process_and_overrides_apply(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    la = cfg.launch
    assert (la.nproc_per_node, la.nnodes, la.strategy, la.teacher_shard) == (1, 1, "ddp", "none")
    cfg = _cfg(tmp_path, overrides=["launch.nproc_per_node=2", 'launch.strategy="fsdp"'])
    assert cfg.launch.world_size == 2 and cfg.launch.strategy == "fsdp"


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ("[launch]\nnprocs = 2\n", r"unknown key\(s\) launch\.nprocs.*valid keys:.*nproc_per_node"),
        (
            '[launch]\nteacher_shard = "fsdp"\nstrategy = "ddp"\n',
            r"launch\.teacher_shard = 'fsdp' needs launch\.strategy = 'fsdp' \(now 'ddp'\)",
        ),
        ("[launch]\nnproc_per_node = 0\n", r"launch\.nproc_per_node = 0: must be >= 1"),
        ('[launch]\nstrategy = "zero3"\n', r"launch\.strategy = 'zero3': choose one of"),
        (
            "[launch]\nnproc_per_node = 4\nglobal_batch = 12\n",
            r"launch\.global_batch = 12 is not a multiple of \[teacher\] batch_size 8 x 4 "
            r"processes = 32",
        ),
        ("[slurm]\narray_tasks = 0\n", r"slurm\.array_tasks = 0: must be >= 1"),
        ("[scan]\nmin_length = 8\n", r"unknown key\(s\) scan\.min_length.*valid keys:.*min_len"),
        ("[scan]\nmax_locations = -1\n", r"scan\.max_locations = -1: must be >= 0"),
    ],
)
def test_impossible_launch_configs_are_one_line_errors(tmp_path: Path, extra, pattern) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=pattern) as info:
        _cfg(tmp_path, extra)
    assert "\n" not in str(info.value)


def test_global_batch_sets_each_sections_accumulation(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path, "[launch]\nnproc_per_node = 2\nglobal_batch = 64\n[soft]\nbatch_size = 4\n"
    )
    assert cfg.launch.grad_accum(cfg.teacher) == 4  # 64 / (8 x 2)
    assert cfg.launch.grad_accum(cfg.soft) == 8  # 64 / (4 x 2)
    assert _cfg(tmp_path).launch.grad_accum(cfg.soft) == cfg.soft.grad_accum  # unset: as given


def test_launch_larger_than_the_machine_is_refused_with_the_numbers(tmp_path: Path) -> None:
    from kdmem.launch import check_launch
    from kdmem.launch.devices import cpu_cores

    n = cpu_cores()
    cfg = _cfg(tmp_path, overrides=[f"launch.nproc_per_node={n + 1}"])
    with pytest.raises(ConfigError, match=rf"nproc_per_node = {n + 1} but this machine has {n} "):
        check_launch(cfg)
    assert check_launch(cfg, check_devices=False) == "auto"  # a corpus job runs no model pass
    cfg = _cfg(tmp_path, overrides=["launch.nnodes=2"])
    with pytest.raises(ConfigError, match=r"launch\.nnodes = 2: .*--emit-slurm"):
        check_launch(cfg)
    assert check_launch(cfg, multinode_ok=True) == "auto"


def test_nccl_without_cuda_falls_back_to_gloo_with_a_warning(tmp_path: Path) -> None:
    from kdmem.distributed import pick_backend
    from kdmem.launch import check_launch

    said: list[str] = []
    cfg = _cfg(tmp_path, overrides=["launch.nproc_per_node=2", 'launch.backend="nccl"'])
    assert check_launch(cfg, log=said.append) == "gloo"
    assert len(said) == 1 and "using gloo" in said[0]
    with pytest.warns(UserWarning, match="using gloo instead"):
        assert pick_backend(use_cuda=False, requested="nccl") == "gloo"
    assert pick_backend(use_cuda=False, requested="auto") == "gloo"


# ---- the launcher ----------------------------------------------------------------------------


def test_first_failure_reads_torchruns_own_report() -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from kdmem.launch.torchrun import first_failure

    killed = ProcessFailure(local_rank=1, pid=4242, exitcode=-9, error_file="/nonexistent")
    other = ProcessFailure(local_rank=0, pid=4241, exitcode=-15, error_file="/nonexistent")
    killed.timestamp, other.timestamp = 100, 200  # the killed rank failed first
    report = ChildFailedError("kdmem", {0: other, 1: killed}).format_msg()
    fail = first_failure("some agent log\n" + report + "\n")
    assert fail is not None and (fail.rank, fail.exitcode, fail.signal) == (1, -9, "SIGKILL")
    crashed = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file="/nonexistent")
    fail = first_failure(ChildFailedError("kdmem", {3: crashed}).format_msg())
    assert fail is not None and (fail.rank, fail.exitcode, fail.signal) == (3, 2, "")
    assert first_failure("torchrun: error: unrecognized arguments") is None


def test_a_launched_rank_writes_its_own_log(tmp_path: Path) -> None:
    env = dict(os.environ, RANK="3", WORLD_SIZE="4", KDMEM_RANK_LOG_DIR=str(tmp_path / "logs"))
    r = subprocess.run([sys.executable, "-m", "kdmem", "--version"], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and r.stdout == r.stderr == ""
    text = (tmp_path / "logs" / "rank3.log").read_text()
    assert text.startswith("== ") and "rank 3 of 4" in text and "kdmem, version" in text


def test_failed_rank_is_one_line_naming_stage_rank_and_log(tmp_path: Path) -> None:
    """A real torchrun of two ranks whose command fails on bad input (a missing --config):
    the stage ends with the first failed rank's exit status, its error and its log."""
    from kdmem.errors import LaunchFailedError
    from kdmem.launch.torchrun import PassLauncher

    launcher = PassLauncher(nproc_per_node=2, backend="gloo")
    with pytest.raises(LaunchFailedError) as info:
        launcher.run(tmp_path, "teacher", ["train", "--config", str(tmp_path / "none.toml")],
                     log=lambda _m: None)  # fmt: skip
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("stage teacher: rank ") and " of 2 failed (exit status 2: " in msg
    assert "none.toml not found" in msg and "rerun kdmem run to resume" in msg
    log = Path(msg.split("its log: ")[1].split(";")[0])
    assert log.parent == tmp_path / "logs" / "teacher" and "kdmem: error:" in log.read_text()


# ---- the memory plan -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt_neox", "olmo2", "qwen3"])
def test_parameters_from_the_config_equal_the_real_models(arch: str) -> None:
    from kdmem.launch.memory import model_shape
    from kdmem.models.tiny import build_model, tiny_config

    cfg = tiny_config(arch, 300, hidden_size=32, num_layers=3, num_heads=4)
    real = build_model(cfg)
    shape = model_shape(cfg)
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert shape.layers == 3 and shape.vocab == 300
    layer = real.base_model.layers
    assert shape.layer_params == sum(p.numel() for p in layer[0].parameters())


def pythia_dir(root: Path, name: str, hidden: int, layers: int, heads: int, vocab: int) -> Path:
    """A model directory holding only the config of a Pythia size (no weights)."""
    from transformers import GPTNeoXConfig

    d = root / name
    GPTNeoXConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * hidden, vocab_size=vocab, max_position_embeddings=2048,
                  rotary_pct=0.25, use_parallel_residual=True,
                  tie_word_embeddings=False).save_pretrained(d)  # fmt: skip
    return d


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pythia")
    return (
        pythia_dir(root, "pythia-6.9b", 4096, 32, 32, 50432),
        pythia_dir(root, "pythia-1.4b", 2048, 24, 16, 50304),
    )


def test_model_configs_alone_give_the_published_parameter_counts(paper_models) -> None:  # type: ignore[no-untyped-def]
    from kdmem.launch.memory import read_shape

    teacher, student = paper_models
    assert read_shape(teacher).params == 6_857_302_016  # Pythia-6.9B (model card)
    assert read_shape(student).params == 1_414_647_808  # Pythia-1.4B


def test_sharding_and_strategies_move_the_bytes_as_they_should() -> None:
    from kdmem.launch.memory import model_shape, train_bytes
    from kdmem.models.tiny import tiny_config

    s = model_shape(tiny_config("gpt_neox", 50304, hidden_size=512, num_layers=8, num_heads=8))
    t = model_shape(tiny_config("gpt_neox", 50304, hidden_size=1024, num_layers=8, num_heads=8))
    one = train_bytes(s, batch=8, seq=256)
    assert one.weights == 4 * s.params and one.optimizer == 8 * s.params
    ddp = train_bytes(s, batch=8, seq=256, world=8)
    assert ddp.grads >= one.grads + 4 * s.params  # DDP's buckets
    fsdp = train_bytes(s, batch=8, seq=256, world=8, strategy="fsdp")
    assert fsdp.optimizer == 8 * s.params // 8 and fsdp.weights < one.weights
    assert train_bytes(s, batch=16, seq=256).activations > one.activations
    bf16 = train_bytes(s, batch=8, seq=256, precision="bf16")
    assert bf16.weights == one.weights  # fp32 master weights
    full = train_bytes(s, batch=8, seq=256, world=8, strategy="fsdp", teacher=t)
    shard = train_bytes(s, batch=8, seq=256, world=8, strategy="fsdp", teacher=t,
                        teacher_shard="fsdp")  # fmt: skip
    off = train_bytes(s, batch=8, seq=256, world=8, strategy="fsdp", teacher=t,
                      teacher_shard="fsdp_offload")  # fmt: skip
    assert full.teacher > shard.teacher > off.teacher
    assert full.teacher - shard.teacher > 4 * t.params * 7 // 8 - 4 * 3 * t.layer_params - 4 * (
        t.root_params
    )


def _bench_plan():  # type: ignore[no-untyped-def]
    """benches/bench_plan.py as a module: the test measures exactly as the benchmark does."""
    import importlib.util

    path = Path(__file__).parent.parent / "benches" / "bench_plan.py"
    spec = importlib.util.spec_from_file_location("bench_plan", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


TINY_PLAN_CASES = ["tiny gpt_neox CE fp32", "tiny olmo2 CE bf16", "tiny qwen3 soft-KD fp32"]


@pytest.mark.parametrize("name", TINY_PLAN_CASES)
def test_plan_estimate_is_within_10_percent_of_the_allocator_peak(
    name: str, tmp_path: Path
) -> None:
    """The plan's bytes against the peak of PyTorch's CPU allocator over kdmem's own training
    loop (AllocatorMeter: every block, workspaces and op-internal temporaries included), one
    intra-op thread so that every allocation is reported. Issue 13 asks for 25%; measured
    +0.1% to +1.4% here, so 10% still leaves room for other PyTorch versions' kernels."""
    bench = _bench_plan()
    case = next(c for c in bench.CASES if c.name == name)
    bench.build(tmp_path, case)
    got = bench.child(tmp_path, case, "cpu", "bytes", threads=1)
    est = bench.estimate(tmp_path, case)["total"]
    assert got["allocator"] > got["live_at_start"] > 0
    assert abs(est / got["allocator"] - 1) <= 0.10, (name, est, got)


def _paper_toml(tmp_path: Path, teacher: Path, student: Path, extra: str = "") -> Path:
    p = tmp_path / "paper.toml"
    p.write_text(
        f"""
[run]
name = "paper"
seeds = [0]
precision = "bf16"
[data]
corpus = ["c.jsonl"]
tokenizer = "tok"
n_examples = 1000000
[models]
teacher = "{teacher}"
student = "{student}"
{extra}"""
    )
    return p


def test_plan_json_per_stage_bytes_fits_steps_and_a_fix(
    tmp_path: Path, paper_models, capsys
) -> None:  # type: ignore[no-untyped-def]
    teacher, student = paper_models
    conf = _paper_toml(tmp_path, teacher, student, "[launch]\nnproc_per_node = 8\n")
    args = ["run", str(conf), "--run-dir", str(tmp_path / "rd"), "--plan", "--json",
            "--gpus-per-node", "8", "--gpu-mem", "80GB"]  # fmt: skip
    assert cli(args) == 0
    plan = json.loads(capsys.readouterr().out)
    stages = {s["name"]: s for s in plan["stages"]}
    for s in plan["stages"]:
        assert {"name", "params", "bytes_per_gpu", "fits"} <= set(s)
    assert stages["shard"]["params"] is None and stages["shard"]["kind"] == "cpu"
    t = stages["teacher"]
    assert t["params"] == 6_857_302_016 and t["kind"] == "train"
    # DDP replicates 6.9B params with fp32 weights, grads, buckets and AdamW: no 80 GB GPU
    assert t["bytes_per_gpu"] > 20 * 6_857_302_016 and t["fits"] is False
    assert "launch.strategy=fsdp" in t["suggestion"]
    assert t["steps"] == 3 * (1_000_000 // (8 * 8)) and t["examples"] == 1_000_000
    soft = stages["student_soft_seed0"]
    assert soft["params"] == 1_414_647_808 and soft["bytes"]["teacher"] > 2 * 6_857_302_016
    measure = stages["measure_teacher"]
    assert measure["kind"] == "measure" and measure["steps"] == 0
    # the suggested change fits in the plan of the changed config
    fix = t["suggestion"].split()
    assert cli([*args[:2], *fix, *args[2:]]) == 0
    again = {s["name"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert again["teacher"]["fits"] is True
    assert cli([a for a in args if a != "--json"]) == 0  # text output too
    out = capsys.readouterr().out
    assert "does not fit: teacher:" in out and "try: " in out


def test_run_refuses_a_config_that_cannot_fit_before_the_first_stage(
    tmp_path: Path, paper_models, capsys
) -> None:  # type: ignore[no-untyped-def]
    teacher, student = paper_models
    conf = _paper_toml(tmp_path, teacher, student)
    rd = tmp_path / "rd"
    code = cli(["run", str(conf), "--run-dir", str(rd), 'run.device="cpu"'])
    err = capsys.readouterr().err
    assert code == 2
    line = [ln for ln in err.splitlines() if ln.startswith("kdmem: error:")]
    assert line and "stage teacher needs about" in line[0] and "GiB per process" in line[0]
    assert not (rd / "manifest.json").exists()  # nothing started


def test_every_model_pass_of_the_graph_is_planned(tmp_path: Path) -> None:
    from kdmem.study import build_stages
    from kdmem.study.plan import model_passes

    cfg = _cfg(tmp_path, overrides=["run.seeds=[0, 1]", "soft.temperatures=[1.0, 4.0]",
                                    "measure.every_steps=5"])  # fmt: skip
    names = {s.name for s in build_stages(cfg)}
    prefixes = ("baseline_seed", "student_", "measure_", "steps_")
    passes = {n for n in names if n == "teacher" or n.startswith(prefixes)} - {"steps_subset"}
    assert set(model_passes(cfg)) == passes
    assert {"student_soft_T1_seed0", "steps_teacher", "measure_student_hard_seed1"} <= passes


# ---- Slurm emission and one-stage runs -------------------------------------------------------


def test_emit_slurm_refuses_a_non_empty_directory_unless_forced(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "e.toml"
    conf.write_text(MINIMAL)
    out = tmp_path / "slurm"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    base = ["run", str(conf), "--run-dir", str(tmp_path / "rd"), "--emit-slurm", str(out)]
    assert cli(base) == 2
    assert "is not empty; choose an empty directory or add --force" in capsys.readouterr().err
    assert cli([*base, "--force"]) == 0
    sub = (out / "submit.sh").read_text()
    submitted: list[str] = []
    for line in sub.splitlines():
        if line.startswith("submit "):
            job, _file, *after = line.split()[1:]
            assert set(after) <= set(submitted), f"{job} waits for a job submitted later"
            submitted.append(job)
    assert submitted[:5] == ["tokenizer", "shard-parts", "shard", "index-parts", "index"]
    teacher = next((out / "jobs").glob("*-teacher.sbatch")).read_text()
    assert "--launcher srun --stage teacher" in teacher and "--gpus-per-node" not in teacher
    assert (out / "mine.txt").read_text() == "keep"


def _submitted(out: Path) -> dict[str, list[str]]:
    """submit.sh's jobs, in order, with the jobs each waits for."""
    jobs: dict[str, list[str]] = {}
    for line in (out / "submit.sh").read_text().splitlines():
        if line.startswith("submit "):
            job, _file, *after = line.split()[1:]
            jobs[job] = after
    return jobs


def test_emit_slurm_shards_and_scans_as_arrays(tmp_path: Path) -> None:
    """The shard stage splits the corpus inputs over an array; the scan runs its two rounds
    as two arrays over the index shards, after the teacher's continuations and the index;
    the stage jobs merge. Without [hard] there is nothing to scan."""
    from kdmem.study import build_stages
    from kdmem.study.slurm import emit_slurm

    files = [tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl")]
    for f in files:
        f.write_text('{"text": "x"}\n')
    corpus = "[" + ", ".join(f'"{f}"' for f in files) + "]"
    cfg = _cfg(tmp_path, overrides=[f"data.corpus={corpus}", "slurm.array_tasks=4"])
    out, rd = tmp_path / "slurm", tmp_path / "rd"
    emit_slurm(cfg, build_stages(cfg), rd, out)
    jobs = _submitted(out)
    order = list(jobs)
    assert jobs["shard-parts"] == ["tokenizer"] and jobs["shard"] == ["shard-parts"]
    assert jobs["continuations"] == ["student_hard_seed0"]
    assert jobs["scan-lm-parts"] == ["continuations", "index"]
    assert jobs["scan-hits-parts"] == ["scan-lm-parts"] and jobs["scan"] == ["scan-hits-parts"]
    assert order.index("scan") < order.index("report") and "scan" in jobs["report"]
    text = {p.name.split("-", 1)[1]: p.read_text() for p in (out / "jobs").glob("*.sbatch")}
    shard = text["shard-parts.sbatch"]
    assert "#SBATCH --array=0-3\n" in shard
    assert (f"-m kdmem shard {' '.join(map(str, files))} --tokenizer {rd.resolve()}/tokenizer/"
            f"tokenizer.json --tasks 4 --task \"$SLURM_ARRAY_TASK_ID\" --partial-out "
            f"{rd.resolve()}/parts/shard --dtype auto --text-field text --split train "
            "--threads 8") in shard  # fmt: skip
    lm, hits = text["scan-lm-parts.sbatch"], text["scan-hits-parts.sbatch"]
    cont = f"{rd.resolve()}/scan/teacher_continuations.parquet"
    assert f"-m kdmem scan {cont} --index {rd.resolve()}/shards " in lm
    assert f"--partial-out {rd.resolve()}/parts/scan-lm --threads 8" in lm and "--lm" not in lm
    assert (f"--min-len 50 --max-locations 16 --lm {rd.resolve()}/parts/scan-lm "
            '"${ARGS[@]}" ' f"--partial-out {rd.resolve()}/parts/scan-hits") in hits  # fmt: skip
    assert text["scan.sbatch"].rstrip().endswith("--launcher srun --stage scan")

    no_hard = _cfg(tmp_path, overrides=["hard.enabled=false"])
    emit_slurm(no_hard, build_stages(no_hard), rd, out, force=True)
    assert not {"continuations", "scan-lm-parts", "scan"} & set(_submitted(out))
    assert not list((out / "jobs").glob("*scan*"))


def test_scan_min_len_defaults_to_the_suffix(tmp_path: Path) -> None:
    assert _cfg(tmp_path, overrides=["data.suffix=40"]).scan_min_len() == 40
    assert _cfg(tmp_path, overrides=["scan.min_len=8"]).scan_min_len() == 8
    with pytest.raises(ConfigError) as info:
        _cfg(tmp_path, overrides=["data.suffix=60", "hard.gen_len=100"])
    assert str(info.value) == (
        "invalid scan.min_len = 0 (spans of at least 60 tokens; 0 means data.suffix): the "
        "continuations have hard.gen_len - data.prefix = 50 generated tokens; set "
        "scan.min_len <= 50, or scan.enabled = false"
    )
    # a config that would not fit is fine when nothing is scanned
    assert _cfg(tmp_path, overrides=["scan.min_len=500", "scan.enabled=false"]).scan.min_len == 500


def test_one_stage_needs_its_inputs_done(tmp_path: Path) -> None:
    from kdmem.pipeline import Pipeline, Stage

    def ok(ctx):  # type: ignore[no-untyped-def]
        (ctx.run_dir / ctx.stage).write_text("x")

    stages = [Stage("a", ok, outputs=("a",)), Stage("b", ok, deps=("a",), outputs=("b",))]
    with pytest.raises(MissingStageInputError, match=r"stage b needs stage a, which is not done"):
        Pipeline(tmp_path, stages, log=lambda _m: None).run(only="b")
    with pytest.raises(InvalidArgumentError, match=r"no stage 'c'"):
        Pipeline(tmp_path, stages, log=lambda _m: None).run(only="c")
    Pipeline(tmp_path, stages, log=lambda _m: None).run(only="a")
    m = Pipeline(tmp_path, stages, log=lambda _m: None).run(only="b")
    assert {k: v["status"] for k, v in m["stages"].items()} == {"a": "done", "b": "done"}


def test_stages_of_one_run_directory_in_parallel_keep_every_record(tmp_path: Path) -> None:
    """Jobs of one run directory commit their stages to the manifest at once: none is lost."""
    from kdmem.pipeline import Pipeline, Stage

    names = [f"s{i}" for i in range(8)]
    go = threading.Barrier(len(names))

    def work(ctx):  # type: ignore[no-untyped-def]
        (ctx.run_dir / ctx.stage).write_text("x")
        return {"n": 1}

    stages = [Stage(n, work, outputs=(n,)) for n in names]

    def job(name: str) -> None:
        go.wait()
        Pipeline(tmp_path, stages, log=lambda _m: None).run(only=name)

    threads = [threading.Thread(target=job, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["stages"]) == names
    assert all(r["status"] == "done" for r in manifest["stages"].values())
