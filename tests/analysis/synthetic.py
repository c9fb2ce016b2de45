"""Synthetic run directories for tests, docs and trying the analyses without a GPU.

:func:`write_synthetic_run` writes every analysis input of docs/run_dir.md with the documented
columns of docs/formats.md and a planted relationship: each example has a latent "ease" that
falls with its zlib size (repetitive text is easy), and each model memorizes the examples
whose ease plus model-specific noise clears a threshold set for its target rate. The teacher
memorizes most, the baseline less, the soft student less again and mostly inside T ∩ B, the
hard student as often but with more teacher-specific examples. The numbers mean nothing
about real models; they only exercise the code paths.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from kdmem.atomic import write_json_atomic, write_parquet_atomic
from kdmem.rundir import RUN_FORMAT, RUN_FORMAT_VERSION

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "not",
    "but",
    "first",
    "one",
    "their",
    "its",
    "new",
    "after",
    "who",
    "they",
    "have",
    "two",
    "been",
    "also",
    "other",
    "year",
    "time",
    "city",
    "over",
    "into",
    "school",
    "more",
    "such",
    "most",
    "she",
    "under",
    "part",
    "state",
    "group",
    "world",
    "during",
    "team",
    "called",
    "known",
    "war",
    "between",
    "later",
    "name",
    "american",
    "made",
    "national",
    "several",
    "three",
    "where",
    "film",
    "music",
    "series",
    "since",
    "both",
    "being",
    "game",
    "number",
    "family",
    "season",
    "high",
    "area",
    "league",
    "played",
    "used",
    "river",
    "church",
    "county",
    "album",
    "line",
    "population",
    "released",
    "south",
    "north",
    "system",
    "early",
    "until",
    "early",
]


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and target memorization rates of a synthetic run."""

    n: int = 3000
    seeds: int = 3
    rate_teacher: float = 0.06
    rate_baseline: float = 0.04
    rate_soft: float = 0.02
    rate_hard: float = 0.02
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    prefix: int = 50
    suffix: int = 50
    window: int = 256


def _texts(rng: np.random.Generator, vocab_sizes: np.ndarray, n_words: int = 120) -> list[str]:
    out = []
    for v in vocab_sizes:
        words = rng.choice(_WORDS[: int(v)], size=n_words)
        out.append(" ".join(words.tolist()))
    return out


def _memorized(score: np.ndarray, rate: float) -> np.ndarray:
    k = max(1, round(rate * len(score)))
    thr = np.partition(score, len(score) - k)[len(score) - k]
    return score >= thr


SCAN_MIN_LEN = 8


def _write_scan(root: Path, ids: np.ndarray, seed: int) -> None:
    """``scan/``: 24-token continuations of the tokenizer's ids 1..3 and the spans the scan
    stage would report for them: one to three spans (of 8..20 tokens) in every fifth
    continuation; the longest holds token 2 (``<b>bold</b>``, which the report escapes). Its
    own random stream, so the other tables do not change."""
    rng = np.random.default_rng([seed, 13])
    tokens = rng.integers(1, 4, size=(len(ids), 24))
    rows: list[tuple[int, int, int, int]] = []
    for j in range(0, len(ids), 5):
        for _ in range(int(rng.integers(1, 4))):
            length = int(rng.integers(SCAN_MIN_LEN, 20))
            start = int(rng.integers(0, 24 - length + 1))
            rows.append((int(ids[j]), start, length, int(rng.integers(1, 9))))
    rows.sort()
    eid = rows[0][0]
    rows[0] = (eid, 0, 22, 3)  # the longest
    tokens[list(ids).index(eid), :22] = 2
    rows.sort()
    cont = pa.table(
        {
            "example_id": pa.array(ids, pa.int64()),
            "input_ids": pa.array(list(tokens), pa.list_(pa.int64())),
        }
    )
    write_parquet_atomic(root / "scan" / "teacher_continuations.parquet", cont)
    spans = pa.table(
        {
            "example_id": pa.array([r[0] for r in rows], pa.int64()),
            "start": pa.array([r[1] for r in rows], pa.int32()),
            "length": pa.array([r[2] for r in rows], pa.int32()),
            "count": pa.array([r[3] for r in rows], pa.int64()),
            "shard": pa.array([[0]] * len(rows), pa.list_(pa.int32())),
            "document": pa.array([[r[0]] for r in rows], pa.list_(pa.int64())),
            "offset": pa.array([[50 + r[1]] for r in rows], pa.list_(pa.int64())),
        }
    )
    meta = {"format": "kdmem-spans", "version": 1, "index": "shards", "min_len": SCAN_MIN_LEN,
            "max_locations": 16, "n_generations": len(ids)}  # fmt: skip
    spans = spans.replace_schema_metadata({"kdmem": json.dumps(meta)})
    write_parquet_atomic(root / "scan" / "teacher_spans.parquet", spans)


def write_synthetic_run(
    path: str | Path,
    spec: SyntheticSpec | None = None,
    *,
    seed: int = 0,
    plant_text: str | None = "<script>alert(1)</script>",
    id_offset: int = 0,
) -> Path:
    """Write a synthetic run directory at ``path`` and return it.

    Roles written: ``teacher`` (with ``kl_to_reference`` against the baseline),
    ``baseline_seed<k>``, ``student_soft_seed<k>``, ``student_hard_seed<k>`` for k < spec.seeds,
    and ``student_soft_T<t>_seed0`` per sweep temperature; plus ``features.parquet``,
    ``scan/`` (the teacher's continuations and their spans, :func:`_write_scan`),
    ``data/examples.parquet`` (texts; ``plant_text`` is put into the first soft-student-memorized
    example's text), ``validation/<role>.json`` and ``manifest.json``.
    Example ids are ``id_offset + arange(n)``.
    """
    spec = spec or SyntheticSpec()
    root = Path(path)
    rng = np.random.default_rng(seed)
    n = spec.n
    ids = np.arange(n, dtype=np.int64) + id_offset

    # Repetitive texts (small vocabulary) compress well: low zlib_bytes, high ease.
    vocab = rng.integers(4, len(_WORDS) + 1, size=n)
    texts = _texts(rng, vocab)
    zlib_b = np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.int64)
    z = (zlib_b - zlib_b.mean()) / zlib_b.std()
    ease = -1.5 * z + rng.normal(0.0, 0.5, n)

    log_ppl_base = 2.5 + 0.8 * z + rng.normal(0.0, 0.3, n)
    log_ppl_teacher = log_ppl_base - 0.3 + rng.normal(0.0, 0.2, n)
    kl_tb = np.abs(rng.normal(0.2, 0.1, n)) * np.exp(0.3 * z)

    # The run's tokenizer (a word-level one) and decoded spot checks in the teacher's table:
    # one agreeing, one not, and one whose decoded text must be escaped by the report.
    from tokenizers import Tokenizer, models, pre_tokenizers

    from kdmem.identity import tokenizer_hash

    tok = Tokenizer(
        models.WordLevel({"[UNK]": 0, "the": 1, "<b>bold</b>": 2, "cat": 3}, unk_token="[UNK]")
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer" / "tokenizer.json"))
    spot = [
        {"example_id": int(ids[0]), "decoded": [1, 3], "match": True},
        {"example_id": int(ids[1]), "decoded": [1, 2, 3], "match": False},
    ]

    def table(memorized: np.ndarray, log_ppl: np.ndarray, role: str, kl: np.ndarray | None) -> None:
        npred = spec.window - 1
        first_mismatch = np.where(memorized, spec.suffix, rng.integers(0, spec.suffix, n)).astype(
            np.int32
        )
        ppl_window = 1.0 + np.exp(log_ppl - 1.5 * memorized)
        seq_logprob = -np.log(ppl_window) * npred
        ppl_suffix = np.where(memorized, 1.0 + rng.random(n) * 0.05, ppl_window * 1.2)
        cols = {
            "example_id": pa.array(ids, pa.int64()),
            "memorized": pa.array(memorized, pa.bool_()),
            "first_mismatch": pa.array(first_mismatch, pa.int32()),
            "suffix_logprob": pa.array(-np.log(ppl_suffix) * spec.suffix, pa.float64()),
            "seq_logprob": pa.array(seq_logprob, pa.float64()),
            "ppl_window": pa.array(ppl_window, pa.float64()),
            "ppl_suffix": pa.array(ppl_suffix, pa.float64()),
            "mink_logprob": pa.array(-np.log(ppl_window) * 3.0, pa.float64()),
            "entropy_last_k": pa.array(
                np.clip(0.6 * np.log(ppl_window) + rng.normal(0.0, 0.2, n), 0.01, None),
                pa.float64(),
            ),
        }
        if kl is not None:
            cols["kl_to_reference"] = pa.array(kl, pa.float64())
        meta = {
            "role": role,
            "prefix": spec.prefix,
            "suffix": spec.suffix,
            "dtype": "float32",
            "model_hash": f"synthetic-{role}",
            "reference_model_hash": "synthetic-baseline_seed0" if kl is not None else None,
            "tokenizer_hash": tokenizer_hash(tok),
            "verify": {"spot_checks": spot} if role == "teacher" else None,
        }
        t = pa.table(cols).replace_schema_metadata({"kdmem": json.dumps(meta)})
        write_parquet_atomic(root / "measure" / f"{role}.parquet", t)

    teacher = _memorized(ease + rng.normal(0.0, 0.4, n), spec.rate_teacher)
    table(teacher, log_ppl_teacher, "teacher", kl_tb)
    first_soft: np.ndarray | None = None
    for k in range(spec.seeds):
        base = _memorized(ease + rng.normal(0.0, 0.4, n), spec.rate_baseline)
        table(base, log_ppl_base + rng.normal(0.0, 0.05, n), f"baseline_seed{k}", None)
        soft = _memorized(ease + 0.6 * teacher + 0.6 * base + rng.normal(0, 0.3, n), spec.rate_soft)
        table(soft, log_ppl_base + 0.1, f"student_soft_seed{k}", None)
        if first_soft is None:
            first_soft = soft
        # The hard student copies the teacher's continuations: more teacher-specific examples.
        hard_score = ease + 1.2 * (teacher & ~base) + 0.5 * base + rng.normal(0, 0.3, n)
        hard = _memorized(hard_score, spec.rate_hard)
        table(hard, log_ppl_base + 0.15, f"student_hard_seed{k}", None)
    for temp in spec.temperatures:
        rate = spec.rate_soft * 2.0 / (1.0 + temp)
        sw = _memorized(ease + 0.6 * teacher + rng.normal(0, 0.3, n), rate)
        table(sw, log_ppl_base + 0.1, f"student_soft_T{temp:g}_seed0", None)

    if plant_text is not None and first_soft is not None and first_soft.any():
        i = int(np.flatnonzero(first_soft)[0])
        texts[i] = f"{texts[i][:60]} {plant_text} {texts[i][60:]}"
        zlib_b[i] = len(zlib.compress(texts[i].encode("utf-8")))
    raw = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.float64)
    suffix_count = rng.poisson(np.exp(np.clip(ease, -3, 3)))
    features = pa.table(
        {
            "example_id": pa.array(ids, pa.int64()),
            "zlib_bytes": pa.array(zlib_b, pa.int64()),
            "zlib_ratio": pa.array(zlib_b / raw, pa.float64()),
            "suffix_count": pa.array(suffix_count, pa.int64()),
            "window_count": pa.array(np.maximum(1, suffix_count // 2), pa.int64()),
            "longest_match_max": pa.array(rng.integers(1, 256, n), pa.int32()),
            "longest_match_mean": pa.array(rng.random(n) * 20, pa.float64()),
        }
    )
    write_parquet_atomic(root / "features.parquet", features)
    # Example groups as the demo writes them: the first tenth "planted", the rest "natural".
    group = np.where(np.arange(n) < n // 10, "planted", "natural")
    write_parquet_atomic(
        root / "data" / "groups.parquet",
        pa.table({"example_id": pa.array(ids, pa.int64()), "group": pa.array(group.tolist())}),
    )
    # Memorization over training of the first soft student: rates rising over three kept
    # models, on a subset of 100 examples.
    write_json_atomic(
        root / "measure" / "steps" / "student_soft_seed0.json",
        {
            "role": "student_soft_seed0",
            "steps": [
                {"step": step, "memorized": mem, "rate": mem / 100}
                for step, mem in ((10, 1), (20, 3), (30, 4))
            ],
        },
    )
    write_parquet_atomic(
        root / "data" / "examples.parquet",
        pa.table({"example_id": pa.array(ids, pa.int64()), "text": pa.array(texts, pa.string())}),
    )
    _write_scan(root, ids, seed)
    roles = ["teacher"] + [
        f"{kind}_seed{k}"
        for k in range(spec.seeds)
        for kind in ("baseline", "student_soft", "student_hard")
    ]
    for role in roles:
        loss = float(2.0 + rng.random())
        write_json_atomic(
            root / "validation" / f"{role}.json",
            {"role": role, "loss": loss, "ppl": float(np.exp(loss)), "n_tokens": 50_000},
        )
    import kdmem

    write_json_atomic(
        root / "manifest.json",
        {
            "format": RUN_FORMAT,
            "version": RUN_FORMAT_VERSION,
            "kdmem_version": kdmem.__version__,
            "stages": {},
            "synthetic": {"seed": seed, "n": n},
        },
    )
    return root
