"""Embedding throughput against sentence-transformers, and similarity quality, in one run.

    .venv/bin/python benchmarks/embed.py                     # 512 prompts from ../shared/data/sft
    .venv/bin/python benchmarks/embed.py --texts 1024 --repeats 5
    .venv/bin/python benchmarks/embed.py --data /path/to/sft.jsonl

Prints one JSON line. Throughput: ``gpt_demo.embeddings.embed`` (its defaults) against
``SentenceTransformer.encode`` (its defaults) on the same model object and the same
texts, alternating repeats, medians; ``ratio`` = ours / direct. Quality: Spearman
correlation between cosine similarity and human scores on
``benchmarks/data/sts_gpt_demo.jsonl`` (64 pairs written by the team, see its README)
for both paths, and the largest absolute difference between the two paths' vectors,
which shows the package does not alter the model.

Texts: the prompts of OpenAssistant oasst1 (Apache-2.0) in ``../shared/data/sft/sft.jsonl``
(not committed); without that file, the STS sentences are used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "sft" / "sft.jsonl"


def spearman(x, y) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(x), np.asarray(y)).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    import numpy as np
    import torch

    from gpt_demo import embeddings

    sts = [json.loads(line) for line in (HERE / "data" / "sts_gpt_demo.jsonl").read_text().splitlines()]
    if args.data.is_file():
        rows = [json.loads(line) for line in args.data.read_text().splitlines()]
        texts, source = [r["prompt"] for r in rows if r.get("prompt", "").strip()], "oasst1 prompts"
    else:
        texts, source = [p["sentence1"] for p in sts] + [p["sentence2"] for p in sts], "sts sentences"
    texts = (texts * (args.texts // max(len(texts), 1) + 1))[: args.texts]

    model = embeddings.minilm_model()

    def ours():
        return embeddings.embed(texts, progress=False)

    def direct():
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    ours(), direct()  # warm-up
    times = {"ours": [], "direct": []}
    for r in range(args.repeats):
        for name, fn in ((("ours", ours), ("direct", direct)) if r % 2 == 0 else (("direct", direct), ("ours", ours))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr)
    ours_sps = len(texts) / statistics.median(times["ours"])
    direct_sps = len(texts) / statistics.median(times["direct"])

    s1, s2 = [p["sentence1"] for p in sts], [p["sentence2"] for p in sts]
    gold = [p["score"] for p in sts]
    a, b = embeddings.embed(s1), embeddings.embed(s2)
    da = model.encode(s1, normalize_embeddings=True, convert_to_numpy=True)
    db = model.encode(s2, normalize_embeddings=True, convert_to_numpy=True)
    print(json.dumps({
        "benchmark": "embed",
        "model": "all-MiniLM-L6-v2",
        "texts": len(texts),
        "text_source": source,
        "ours_sentences_per_s": round(ours_sps, 1),
        "direct_sentences_per_s": round(direct_sps, 1),
        "ratio": round(ours_sps / direct_sps, 3),
        "ours_batch_size": 64,
        "direct_batch_size": 32,
        "sts_set": "sts_gpt_demo.jsonl (64 team-written pairs)",
        "spearman_ours": round(100 * spearman((a * b).sum(1), gold), 2),
        "spearman_direct": round(100 * spearman((da * db).sum(1), gold), 2),
        "max_abs_diff_vs_direct": float(np.abs(np.concatenate([a - da, b - db])).max()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
