"""Smoke test of an installed release wheel, run by `./dev.sh test` from a fresh venv.

    python tests/smoke_wheel.py WORKDIR KDMEM_EXE

Trains a tiny tokenizer locally, shards a small JSONL corpus with the installed `kdmem shard`,
and reads the result back with kdmem.corpus.open_shards, checking the token ids against the
Python tokenizers library. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers


def main() -> None:
    work, exe = Path(sys.argv[1]), sys.argv[2]
    texts = [f"document {i}: the quick brown fox jumps over {i % 7} lazy dogs" for i in range(500)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts,
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok.save(str(work / "tokenizer.json"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = work / "shards"
    subprocess.run(
        [exe, "shard", str(corpus), "--tokenizer", str(work / "tokenizer.json"), "--out", str(out)],
        check=True,
    )
    from kdmem.corpus import open_shards

    ss = open_shards(out)
    eos = tok.token_to_id("<|endoftext|>")
    assert len(ss) == len(texts), (len(ss), len(texts))
    for i in (0, 1, 250, 499):
        want = [*tok.encode(texts[i], add_special_tokens=False).ids, eos]
        assert ss[i].tolist() == want, (i, ss[i].tolist(), want)
    print(
        f"wheel smoke test: kdmem shard wrote {len(ss)} documents, {ss.n_tokens} tokens; ids match"
    )


if __name__ == "__main__":
    main()
