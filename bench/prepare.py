"""Preparing a text corpus: Beam (DirectRunner, 1 and 2 worker processes) against the in-process path.

The corpus is made from the King James Bible (the ``bible`` dataset's verses, shuffled and
repeated, one verse per line, in ``--files`` files), and prepared as ``bible_gpt`` needs it:
byte-level BPE (a 4,096-token vocabulary learned once on the Bible's training verses, given
to every contender) and next-token windows of 128 tokens, into 8 shards. Every contender
runs the same code (``bigkeras.data.beam``): ``prepare_in_process`` in this process, or
``prepare`` on Beam's DirectRunner with ``--direct_num_workers`` 1 or 2 in multi-processing
mode. Contenders run in alternating turns; the best of each is reported, as examples
(windows) per second and corpus MB per second, with each worker's peak memory.

``--big`` instead prepares a corpus of ``--big-gb`` (default 2.1) GB once with Beam and 2
workers, and checks the shard count, the total example count (against a count computed
from the verses' own token counts, independent of the pipeline) and each worker's peak
memory against 1 GB: ``VmHWM`` (the true peak of resident memory, which counts about 0.57 GB
of TensorFlow's and TF Text's shared library pages, the same pages in every worker) and the
peak of private (anonymous) memory, sampled twice a second.

    python bench/prepare.py                      # about 60 MB (whole shuffled copies), 2 turns each
    python bench/prepare.py --big                # 2.1 GB, once (long on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigkeras import data  # noqa: E402
from bigkeras.data import beam, vocabulary  # noqa: E402

CONTEXT = 128
SHARDS = 8
GB = 1e9


def make_corpus(folder: Path, megabytes: float, files: int, seed: int = 0) -> dict:
    """Shuffled, repeated Bible verses in ``files`` files, each at least ``megabytes / files`` MB
    of whole shuffled copies of the verses; returns sizes, line counts and each file's verse order."""
    verses = np.asarray(data.load("bible").train.x, dtype=object)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    target = megabytes * 1e6 / files
    composition = []
    for i in range(files):
        written, order = 0, []
        with open(folder / f"part-{i:03d}.txt", "w", encoding="utf-8") as f:
            while written < target:
                chunk = rng.permutation(len(verses))
                text = "\n".join(verses[chunk]) + "\n"
                f.write(text)
                written += len(text.encode("utf-8"))
                order.append(chunk)
        composition.append(np.concatenate(order))
    size = sum(p.stat().st_size for p in folder.glob("*.txt"))
    return {"files": files, "bytes": size, "lines": int(sum(len(c) for c in composition)),
            "composition": composition, "verses": verses}


def expected_windows(corpus: dict, tokenizer) -> int:
    """Windows ``lm_windows`` cuts from each file, from each verse's own token count."""
    verses = corpus["verses"]
    with_newline = np.array([len(t) for t in tokenizer([v + "\n" for v in verses])], np.int64)
    bare = np.array([len(t) for t in tokenizer(list(verses))], np.int64)
    total = 0
    for order in corpus["composition"]:
        tokens = with_newline[order[:-1]].sum() + bare[order[-1]]
        total += -(-(tokens - 1) // CONTEXT)
    return int(total)


def config(corpus_dir: Path, out: Path, vocab: Path) -> beam.PrepareConfig:
    return beam.PrepareConfig(output=str(out), splits={"train": [str(corpus_dir / "*.txt")]}, task="gpt",
                              tokenizer=vocabulary.loader("bpe", vocab), tokenizer_name="bpe 4096 (bible train)",
                              sequence_length=CONTEXT, num_shards=SHARDS)


def run(name: str, corpus_dir: Path, out: Path, vocab: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cfg = config(corpus_dir, out, vocab)
    start = time.perf_counter()
    if name == "in-process":
        manifest = beam.prepare_in_process(cfg)
    else:
        workers = name.split()[1]
        manifest = beam.prepare(cfg, ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                                      f"--direct_num_workers={workers}"])
    seconds = time.perf_counter() - start
    m = manifest["metrics"]
    return {"contender": name, "seconds": round(seconds, 1), "examples": manifest["splits"]["train"]["num_examples"],
            "bytes_read": m["prepare/bytes_read"], "peak_rss_mb": round(m["prepare/worker_peak_rss_bytes_max"] / 2**20),
            "peak_private_mb": round(m["prepare/worker_peak_anon_bytes_max"] / 2**20)}


def compare(args, tmp: Path, vocab: Path) -> list[dict]:
    corpus = make_corpus(tmp / "corpus", args.mb, args.files)
    print(f"corpus: {corpus['bytes'] / 1e6:.1f} MB, {corpus['lines']:,} lines in {args.files} files", flush=True)
    best = {}
    for turn in range(args.turns):
        for name in ("in-process", "beam 1", "beam 2"):
            row = run(name, tmp / "corpus", tmp / "out", vocab)
            print(f"turn {turn + 1}: {json.dumps(row)}", flush=True)
            if name not in best or row["seconds"] < best[name]["seconds"]:
                best[name] = row
    base = best["in-process"]["seconds"]
    print(f"\n| contender | seconds | examples/s | MB/s | vs in-process | worker peak RSS / private MiB |\n"
          f"|---|---|---|---|---|---|")
    for row in best.values():
        print(f"| {row['contender']} | {row['seconds']:.1f} | {row['examples'] / row['seconds']:,.0f} | "
              f"{row['bytes_read'] / row['seconds'] / 1e6:.2f} | {base / row['seconds']:.2f}x | "
              f"{row['peak_rss_mb']:,} / {row['peak_private_mb']:,} |")
    return list(best.values())


def big(args, tmp: Path, vocab: Path) -> dict:
    start = time.perf_counter()
    corpus = make_corpus(tmp / "corpus", args.big_gb * 1000, args.files)
    print(f"corpus: {corpus['bytes'] / GB:.2f} GB, {corpus['lines']:,} lines in {args.files} files "
          f"(made in {time.perf_counter() - start:.0f} s)", flush=True)
    expected = expected_windows(corpus, vocabulary.load("bpe", vocab))
    row = run(f"beam {args.workers}", tmp / "corpus", tmp / "out", vocab)
    shards = sorted((tmp / "out").glob("train-*-of-*.tfrecord"))
    counted = sum(count_records(p) for p in shards)
    spec = data.read_spec(tmp / "out" / "train")
    row.update(corpus_gb=round(corpus["bytes"] / GB, 3), lines=corpus["lines"], expected_examples=expected,
               counted_records=counted, spec_examples=spec["num_examples"], shards=len(shards),
               output_gb=round(sum(p.stat().st_size for p in shards) / GB, 3))
    row["counts_match"] = bool(len(shards) == SHARDS == spec["num_shards"]
                               and counted == expected == spec["num_examples"] == row["examples"])
    # Resident memory counts TensorFlow's and TF Text's shared library pages (about 0.57 GB, the
    # same pages in every worker): so both figures are reported and checked separately.
    row["peak_private_under_1gb"] = row["peak_private_mb"] * 2**20 < GB
    row["peak_rss_under_1gb"] = row["peak_rss_mb"] * 2**20 < GB
    print(json.dumps(row, indent=2), flush=True)
    return row


def count_records(path: Path) -> int:
    """Records in a TFRecord file, from its length headers alone (no parsing)."""
    count = 0
    with open(path, "rb") as f:
        while header := f.read(12):
            length = int.from_bytes(header[:8], "little")
            f.seek(length + 4, 1)  # the data and its CRC
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=40.0, help="corpus size for the comparison")
    parser.add_argument("--files", type=int, default=16, help="corpus files (Beam's unit of parallel work)")
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--big", action="store_true", help="prepare a --big-gb corpus once and check it")
    parser.add_argument("--big-gb", type=float, default=2.1)
    parser.add_argument("--workers", type=int, default=2, help="Beam worker processes for --big")
    parser.add_argument("--tmp", help="work folder (default a temporary one, removed)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        vocab = tmp / "vocabulary"
        if not (vocab / "vocab.json").is_file():
            vocabulary.learn("bpe", list(data.load("bible").train.x), vocab, vocabulary_size=4096)
        result = big(args, tmp, vocab) if args.big else compare(args, tmp, vocab)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
