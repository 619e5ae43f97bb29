"""Prepare big corpora on Apache Beam into sharded TFRecords, out of core.

One pipeline for a laptop (``DirectRunner``, several processes) and a cluster (Dataflow,
Flink, Spark): read raw files through Beam's file systems (local paths; ``gs://``, ``s3://``,
``hdfs://`` with Beam's extras installed), apply the recipes' own preprocessing (keras-hub
WordPiece, byte-level BPE or SentencePiece tokenizers, ``BertSingleSegmentPreprocessor``
packing, ``bits.lm_windows``' next-token windows, ``prepare_images`` resizing), and write
``{split}-0000i-of-0000N.tfrecord`` shards with the spec ``read_tfrecords`` reads, then
``dataset.json`` last (``bigkeras.data.prepared``).

Stages (each reports progress and Beam metrics under its own namespace):

1. ``survey`` (only when needed): class names from the labels, and a deterministic sample
   of the vocabulary split's texts (the ``sample_size`` lines whose hash of file and line
   number is smallest, so every runner draws the same sample), on which the recipes'
   learners (``bigkeras.data.vocabulary``) learn the vocabulary, written to ``vocabulary/``.
2. ``prepare``: one input file at a time per worker, streamed in batches: decode, preprocess,
   encode and append to this bundle's piece of each shard. Nothing is collected in memory:
   a worker holds one batch and its tokenizer.
3. ``write``: the pieces of each shard are concatenated into the shard (TFRecord files
   concatenate), then the specs and ``dataset.json`` are written: a run that fails leaves no
   finished-looking dataset.

Bad input (a path that matches nothing, a file that cannot be read, an image that does not
decode, a line that is not UTF-8) is counted (metric ``bad_input/<kind>``) and skipped with a
log line naming the file, or, with ``strict=True``, stops the run with a
:class:`BadInputError` naming it.

    config = PrepareConfig(output="/data/reviews", splits={"train": ["raw/train.tsv"], "test": ["raw/test.tsv"]},
                           format="tsv", task="bert", tokenizer=loader, tokenizer_name="all-MiniLM-L6-v2")
    manifest = prepare(config, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from bigkeras import checks
from bigkeras.data import prepared as prepared_lib

FORMATS = ("lines", "csv", "tsv", "folders")
TASKS = ("text", "bert", "gpt", "image", "pairs")
TMP = ".prepare-tmp"
VOCABULARY_DIR = "vocabulary"
BATCH = 256  # records preprocessed together
PROGRESS_SECONDS = 15.0
DEFAULT_PIPELINE_ARGS = ("--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2")
_ERROR_MARK = "bigkeras prepare: "
LOG = logging.getLogger("bigkeras.prepare")


class BadInputError(ValueError):
    """Bad input met with ``strict=True``, or a setting the input contradicts. Names the file."""


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """What to read, how to preprocess it and where to write it.

    Args:
        output: str, the dataset folder (shards, specs, ``vocabulary/``, ``dataset.json``).
        splits: ``{split: [file patterns]}``; ``format="folders"`` takes root folders whose
            subfolders are the class names.
        format: ``"lines"`` (one example per line; for ``gpt`` each file is one document),
            ``"csv"``/``"tsv"`` (a header row; columns named by ``columns``) or ``"folders"``.
        task: ``"text"`` (text and label), ``"bert"`` (plus ``BertSingleSegmentPreprocessor``
            features), ``"gpt"`` (``lm_windows`` of ``sequence_length`` tokens per document),
            ``"image"`` (decoded, resized uint8 images and labels) or ``"pairs"`` (source, target).
        num_shards: int, shards per split. Default 8.
        columns: ``{"text", "label", "source", "target", "image"}`` -> column names for CSV/TSV;
            a ``label`` of None means unlabelled.
        classes: the class names in id order; None collects and sorts the labels seen.
        tokenizer: a picklable no-argument function returning the keras-hub tokenizer (e.g.
            ``functools.partial(checkpoints.load_tokenizer, "all-MiniLM-L6-v2")``); None with
            ``vocabulary`` learns one.
        tokenizer_name: str, what ``tokenizer`` is, recorded in ``dataset.json``.
        vocabulary: ``"bpe"``, ``"wordpiece"`` or ``"sentencepiece"`` to learn one, or None.
        vocabulary_size: int, the most tokens of a learned vocabulary. Default 4096.
        sample_size: int, texts (lines) in the deterministic sample it is learned on.
        vocabulary_split: str, the split the sample is drawn from. Default ``"train"``.
        sequence_length: int, BERT's packed length or GPT's window. Default 128.
        image_size: ``(height, width)`` images are resized to (``task="image"``).
        channels: int, 1 or 3 image channels. Default 3.
        validation_fraction: float, a share of ``train`` moved to ``validation`` by a hash of
            (file, record): documents stay whole for ``gpt``. Default 0.
        strict: stop at the first bad input instead of counting and skipping it.
        name: str, the dataset name in ``dataset.json`` (default the folder name).
    """

    output: str
    splits: Mapping[str, Sequence[str]]
    format: str = "lines"
    task: str = "text"
    num_shards: int = 8
    columns: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    classes: Sequence[str] | None = None
    tokenizer: Callable | None = None
    tokenizer_name: str | None = None
    vocabulary: str | None = None
    vocabulary_size: int = 4096
    sample_size: int = 100_000
    vocabulary_split: str = "train"
    sequence_length: int = 128
    image_size: Sequence[int] | None = None
    channels: int = 3
    validation_fraction: float = 0.0
    strict: bool = False
    name: str = ""

    def __post_init__(self):
        checks.one_of("format", self.format, FORMATS)
        checks.one_of("task", self.task, TASKS)
        checks.positive_int("num_shards", self.num_shards)
        checks.positive_int("sample_size", self.sample_size)
        checks.positive_int("sequence_length", self.sequence_length)
        checks.fraction("validation_fraction", self.validation_fraction)
        if not self.splits or not all(isinstance(p, (list, tuple)) and p for p in self.splits.values()):
            raise ValueError(f"`splits` must map split names to non-empty lists of patterns, got {self.splits!r}.")
        if self.vocabulary is not None:
            checks.one_of("vocabulary", self.vocabulary, ("bpe", "wordpiece", "sentencepiece"))
        if self.task in ("bert", "gpt") and self.tokenizer is None and self.vocabulary is None:
            raise ValueError(f"`task` {self.task!r} needs `tokenizer` (a checkpoint's) or `vocabulary` to learn one.")
        if self.task == "image":
            checks.positive_ints("image_size", self.image_size)
            checks.one_of("channels", self.channels, (1, 3))
        if self.task == "image" and self.format in ("lines", "tsv"):
            raise ValueError(f"`task` 'image' reads `format` 'folders' or 'csv' (a path column), got {self.format!r}.")
        if self.task == "pairs" and self.format not in ("csv", "tsv"):
            raise ValueError(f"`task` 'pairs' reads `format` 'csv' or 'tsv', got {self.format!r}.")

    def column(self, role: str) -> str | None:
        """The CSV/TSV column of ``role`` (``text``, ``label``, ``source``, ``target``, ``image``)."""
        return self.columns.get(role, role)

    @property
    def labelled(self) -> bool:
        """Whether examples carry a class label (folders always; CSV/TSV with a label column)."""
        if self.task in ("gpt", "pairs"):
            return False
        return self.format == "folders" or (self.format in ("csv", "tsv") and bool(self.column("label")))

    @property
    def tmp(self) -> str:
        return _join(self.output, TMP)


# --- Reporting: counters, bad input, progress. ------------------------------------------


class Report:
    """Counts, bad-input handling and periodic progress lines for one stage in one process.

    Args:
        stage: str, the stage name (metrics namespace and log prefix).
        strict: raise :class:`BadInputError` at bad input instead of counting it.
        counter: ``counter(name, n)`` that adds to a metric; None keeps counts in ``counts``.
    """

    def __init__(self, stage: str, *, strict: bool, counter: Callable[[str, int], None] | None = None):
        self.stage, self.strict, self._counter = stage, strict, counter
        self.counts: dict[str, int] = {}
        self._start = self._last = self._sampled = time.monotonic()
        self.peak_anon = memory()["anon"]

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n
        if self._counter is not None:
            self._counter(name, n)

    def bad(self, kind: str, message: str) -> None:
        """One bad input: raise when strict, else count ``bad_input/kind`` and log ``message``."""
        if self.strict:
            raise BadInputError(f"{_ERROR_MARK}{message} (stopping: --strict)")
        self.inc(f"bad_input/{kind}")
        LOG.warning("%s: skipped bad input: %s", self.stage, message)

    def progress(self, force: bool = False) -> None:
        """Log the counts every ``PROGRESS_SECONDS`` (or now, with ``force``)."""
        now = time.monotonic()
        if force or now - self._sampled > 0.5:  # private memory, sampled twice a second
            self._sampled, self.peak_anon = now, max(self.peak_anon, memory()["anon"])
        if not force and now - self._last < PROGRESS_SECONDS:
            return
        self._last = now
        seconds = max(now - self._start, 1e-9)
        examples = self.counts.get("examples", 0)
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.counts.items()))
        print(f"[{self.stage} pid {os.getpid()}] {parts}; {examples / seconds:,.0f} examples/s, "
              f"{self.counts.get('bytes_read', 0) / seconds / 1e6:.2f} MB/s after {seconds:.0f} s; "
              f"memory: peak {peak_rss_bytes() / 2**20:,.0f} MiB resident, {self.peak_anon / 2**20:,.0f} MiB private",
              file=sys.stderr, flush=True)


def memory() -> dict[str, int]:
    """This process's memory from /proc (zeros elsewhere), bytes: ``peak_rss`` (``VmHWM``, the
    true peak, counting shared library pages such as TensorFlow's 0.5 GB), ``anon`` (``RssAnon``,
    the private memory now) and ``file`` (``RssFile``, mapped files now)."""
    keys = {"VmHWM:": "peak_rss", "RssAnon:": "anon", "RssFile:": "file"}
    out = dict.fromkeys(keys.values(), 0)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.split(None, 1)[0] in keys:
                    out[keys[line.split(None, 1)[0]]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def peak_rss_bytes() -> int:
    """This process's peak resident memory (``VmHWM``; 0 where /proc is missing)."""
    return memory()["peak_rss"]


# --- Reading raw input through Beam's file systems. --------------------------------------


@dataclasses.dataclass(frozen=True)
class Unit:
    """One input file of one split (and its class, when the folder names it)."""

    split: str
    path: str
    label: str | None = None


def match_units(config: PrepareConfig, split: str, pattern: str, report: Report) -> list[Unit]:
    """The files ``pattern`` matches, as units; a pattern matching nothing is bad input."""
    from apache_beam.io.filesystems import FileSystems

    glob = _join(pattern, "*", "*") if config.format == "folders" else pattern
    try:
        paths = sorted(m.path for m in FileSystems.match([glob])[0].metadata_list)
    except Exception as e:  # BeamIOError, or the file system's own error
        paths, why = [], f" ({type(e).__name__}: {e})"
    else:
        why = ""
    if not paths:
        report.bad("missing_paths", f"no file matches {glob}{why}")
        return []
    report.inc("files_matched", len(paths))
    label = (lambda p: p.rstrip("/").split("/")[-2]) if config.format == "folders" else (lambda p: None)
    return [Unit(split, p, label(p)) for p in paths]


def binary_lines(path: str, report: Report) -> Iterator[bytes]:
    """The lines of ``path`` without their ``\\n``, read in 1 MB blocks (``.gz``/``.bz2`` decompressed)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        rest = b""
        while chunk := f.read(1 << 20):
            report.inc("bytes_read", len(chunk))
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


def text_lines(path: str, report: Report) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file; a line that is not UTF-8 is bad input."""
    for number, raw in enumerate(binary_lines(path, report), start=1):
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            report.bad("bad_lines", f"{path}:{number} is not UTF-8 ({e.reason} at byte {e.start})")


def read_records(config: PrepareConfig, unit: Unit, report: Report) -> Iterator[tuple[int, dict]]:
    """``(record number, record)`` pairs of one file; an unreadable file is bad input.

    Records are ``{"text"}`` or ``{"text", "label"}`` (lines, text CSV, text folders),
    ``{"source", "target"}`` (pairs) or ``{"image": bytes, "label"}``.
    """
    try:
        if config.format == "folders":
            yield from _folder_record(config, unit, report)
        elif config.format == "lines":
            for number, line in text_lines(unit.path, report):
                if config.task != "gpt" and not line.strip():  # a blank line is no example (a document keeps it)
                    report.inc("blank_lines")
                    continue
                yield number, {"text": line}
        else:
            yield from _table_records(config, unit, report)
    except BadInputError:
        raise
    except Exception as e:  # OSError, zlib/gzip errors, BeamIOError...
        report.bad("unreadable_files", f"{unit.path} cannot be read ({type(e).__name__}: {e})")


def _folder_record(config, unit, report):
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(unit.path) as f:
        data = f.read()
    report.inc("bytes_read", len(data))
    if config.task == "image":
        yield 0, {"image": data, "label": unit.label, "path": unit.path}
        return
    try:
        yield 0, {"text": data.decode("utf-8").rstrip("\r\n"), "label": unit.label}
    except UnicodeDecodeError as e:
        report.bad("bad_lines", f"{unit.path} is not UTF-8 ({e.reason} at byte {e.start})")


def _table_records(config, unit, report):
    roles = {"pairs": ("source", "target"), "image": ("image",)}.get(config.task, ("text",))
    roles += ("label",) if config.labelled else ()
    numbers = []

    def lines():  # with their newline, so a quoted field keeps the newlines inside it
        for number, line in text_lines(unit.path, report):
            numbers.append(number)
            yield line + "\n"

    reader = csv.reader(lines(), delimiter="\t" if config.format == "tsv" else ",")
    header = next(reader, None)
    if header is None:
        return
    missing = [config.column(r) for r in roles if config.column(r) not in header]
    if missing:
        raise BadInputError(f"{_ERROR_MARK}{unit.path} has no column {missing[0]!r} (header: {header}); "
                            "name the columns with --text-column/--label-column/... ")
    index = {r: header.index(config.column(r)) for r in roles}
    for row in reader:
        if len(row) != len(header):
            report.bad("bad_rows", f"{unit.path}:{numbers[-1]} has {len(row)} fields, the header {len(header)}")
            continue
        record = {r: row[i] for r, i in index.items()}
        if "image" in record and not _read_image(record, unit, report):
            continue
        yield numbers[-1], record


def _read_image(record: dict, unit: Unit, report: Report) -> bool:
    """Replace a CSV row's image path (relative to the CSV's folder) by the file's bytes."""
    from apache_beam.io.filesystems import FileSystems

    path = record["image"]
    if "://" not in path and not path.startswith("/"):
        path = _join(unit.path.rsplit("/", 1)[0], path)
    try:
        with FileSystems.open(path) as f:
            record["image"], record["path"] = f.read(), path
    except Exception as e:  # a missing or unreadable image file
        report.bad("unreadable_files", f"{path} (listed in {unit.path}) cannot be read ({type(e).__name__}: {e})")
        return False
    report.inc("bytes_read", len(record["image"]))
    return True


# --- Preprocessing: the recipes' functions, applied in batches. ---------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the survey decided: class names, tokenizer loader, vocabulary record."""

    class_names: tuple[str, ...] = ()
    tokenizer: Callable | None = None
    tokenizer_name: str | None = None
    vocabulary: Mapping | None = None


class Examples:
    """Turns one file's records into example dicts for ``config.task`` (``setup`` in the worker)."""

    def __init__(self, config: PrepareConfig, plan: Plan):
        self.config, self.plan = config, plan
        self._labels = {c: i for i, c in enumerate(plan.class_names)}
        self._tokenizer = self._pack = None

    def setup(self) -> None:
        """Build the tokenizer and packer once per worker (they are not pickled)."""
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        if self.plan.tokenizer is not None:
            self._tokenizer = self.plan.tokenizer()
        if self.config.task == "bert":
            from bigkeras.data.packing import BertSingleSegmentPreprocessor

            self._pack = BertSingleSegmentPreprocessor(self._tokenizer, sequence_length=self.config.sequence_length)

    def spec(self) -> dict:
        """``{feature: tf.TensorSpec}`` of one example."""
        import tensorflow as tf

        c, length = self.config, (self.config.sequence_length,)
        ids = {k: tf.TensorSpec(length, tf.int32) for k in ("token_ids", "segment_ids", "padding_mask")}
        spec = {
            "text": {"text": tf.TensorSpec((), tf.string)},
            "bert": {"text": tf.TensorSpec((), tf.string), **ids},
            "gpt": {k: tf.TensorSpec(length, tf.int32) for k in ("token_ids", "targets", "weights")},
            "image": {"image": tf.TensorSpec((*(c.image_size or (0, 0)), c.channels), tf.uint8)},
            "pairs": {"source": tf.TensorSpec((), tf.string), "target": tf.TensorSpec((), tf.string)},
        }[c.task]
        if c.labelled:
            spec["label"] = tf.TensorSpec((), tf.int32)
        return spec

    def roles(self) -> dict:
        """Which features ``PreparedSplit.x``/``.y`` read."""
        x = {"text": "text", "bert": "text", "image": "image", "pairs": "source"}.get(self.config.task)
        y = "target" if self.config.task == "pairs" else "label" if self.config.labelled else None
        return {"x": x, "y": y}

    def __call__(self, unit: Unit, records: Iterator, report: Report) -> Iterator[tuple[int, dict]]:
        """``(record number, example)`` for the records of ``unit``."""
        if self.config.task == "gpt":
            yield from self._windows(records, report)
            return
        batch = []
        for number, record in records:
            if self._label_ok(record, unit, number, report):
                batch.append((number, record))
            if len(batch) == BATCH:
                yield from self._batch(batch, report)
                batch = []
        if batch:
            yield from self._batch(batch, report)

    def _label_ok(self, record, unit, number, report) -> bool:
        if "label" not in record or not self.config.labelled:
            return True
        if record["label"] not in self._labels:
            report.bad("unknown_labels", f"{unit.path}:{number} has label {record['label']!r}, not one of the "
                                         f"{len(self._labels)} classes")
            return False
        return True

    def _batch(self, batch, report) -> Iterator[tuple[int, dict]]:
        task = self.config.task
        if task == "image":
            yield from self._images(batch, report)
            return
        rows = [dict(r) for _, r in batch]
        if task == "bert":
            import tensorflow as tf

            packed = self._pack(tf.constant([r["text"] for r in rows]))
            packed = {k: np.asarray(v, np.int32) for k, v in packed.items()}
            for i, row in enumerate(rows):
                row.update({k: v[i] for k, v in packed.items()})
        for (number, _), row in zip(batch, rows):
            if "label" in row:
                row["label"] = self._labels[row["label"]]
            yield number, row

    def _images(self, batch, report):
        import tensorflow as tf

        from bigkeras.data.preprocessing import prepare_images

        c = self.config
        for number, record in batch:
            try:
                image = tf.io.decode_image(record["image"], channels=c.channels, expand_animations=False)
            except (tf.errors.InvalidArgumentError, ValueError) as e:
                report.bad("bad_images", f"{record['path']} does not decode as an image ({str(e)[:120]})")
                continue
            # prepare_images, the serving_bytes signature's own resizing, at scale 1: uint8 pixels kept.
            pixels = prepare_images(image, size=tuple(c.image_size), channels=c.channels, scale=1.0)
            image = np.asarray(tf.cast(tf.round(tf.clip_by_value(pixels, 0, 255)), tf.uint8))
            yield number, {"image": image, "label": self._labels[record["label"]]}

    def _windows(self, records, report) -> Iterator[tuple[int, dict]]:
        """``bits.lm_windows`` over the document (the file's lines joined by newlines), streamed."""
        length, buffer, lines, pending = self.config.sequence_length, np.zeros(0, np.int32), [], None
        for _, record in records:
            if pending is not None:
                lines.append(pending + "\n")  # every line but the last ends with its newline
            pending = record["text"]
            if len(lines) == BATCH:
                buffer = yield from self._emit(buffer, lines, length)
                lines = []
        if pending is not None:
            lines.append(pending)
        buffer = yield from self._emit(buffer, lines, length)
        if buffer.size >= 2:  # the last, partial window, padded with id 0 and weight 0
            padded = np.zeros(length + 1, np.int32)
            padded[: buffer.size] = buffer
            weights = (np.arange(length) < buffer.size - 1).astype(np.int32)
            yield 0, {"token_ids": padded[:-1], "targets": padded[1:], "weights": weights}

    def _emit(self, buffer, lines, length):
        # Byte-level BPE never merges across the pre-tokenizer's split at a newline, so the
        # lines' tokens concatenated are the document's tokens (checked on the Bible in tests).
        if lines:
            pieces = self._tokenizer(lines)
            buffer = np.concatenate([buffer, *(np.asarray(p, np.int32).ravel() for p in pieces)])
        full = max((buffer.size - 1) // length, 0)
        for j in range(full):
            window = buffer[j * length: (j + 1) * length + 1]
            yield 0, {"token_ids": window[:-1], "targets": window[1:], "weights": np.ones(length, np.int32)}
        return buffer[full * length:]


def split_of(config: PrepareConfig, unit: Unit, number: int) -> str:
    """The split an example goes to: its unit's, or ``validation`` for a hashed share of ``train``."""
    if unit.split != "train" or not config.validation_fraction:
        return unit.split
    key = unit.path if config.task == "gpt" else f"{unit.path}\0{number}"
    return "validation" if _unit_interval(key) < config.validation_fraction else "train"


def _unit_interval(key: str) -> float:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def prepare_unit(config: PrepareConfig, examples: Examples, spec: Mapping, unit: Unit, report: Report):
    """``(split, serialized tf.train.Example)`` for every example of one input file."""
    from bigkeras.data.tfrecords import encode_example

    report.inc("files")
    for number, example in examples(unit, read_records(config, unit, report), report):
        report.inc("examples")
        yield split_of(config, unit, number), encode_example(example, spec)
        report.progress()


# --- Writing: pieces per bundle, concatenated into shards; specs and manifest last. -------


class PieceWriter:
    """This bundle's piece of every shard, under the output's temporary folder.

    Examples go round-robin over the shards from a random start, so small bundles spread out.
    """

    def __init__(self, config: PrepareConfig):
        self.config, self._id = config, uuid.uuid4().hex
        self._writers, self._counts = {}, {}
        self._next = random.Random(self._id).randrange(config.num_shards)

    def write(self, split: str, record: bytes) -> None:
        import tensorflow as tf

        shard = self._next = (self._next + 1) % self.config.num_shards
        key = (split, shard)
        if key not in self._writers:
            path = _join(self.config.tmp, f"{split}-{shard:05d}.{self._id}.piece")
            self._writers[key] = (tf.io.TFRecordWriter(path), path)
        self._writers[key][0].write(record)
        self._counts[key] = self._counts.get(key, 0) + 1

    def close(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        """Close every piece: ``[((split, shard), (piece path, examples)), ...]``."""
        out = []
        for key, (writer, path) in self._writers.items():
            writer.close()
            out.append((key, (path, self._counts[key])))
        self._writers = {}
        return out


def shard_path(config: PrepareConfig, split: str, shard: int) -> str:
    from bigkeras.data.tfrecords import SHARD_TEMPLATE

    return SHARD_TEMPLATE.format(prefix=_join(config.output, split), index=shard, count=config.num_shards)


def concat_pieces(config: PrepareConfig, split: str, shard: int, pieces, report: Report) -> tuple[str, int, int]:
    """Write shard ``shard`` of ``split`` from its pieces (then deleted): ``(split, shard, examples)``."""
    from apache_beam.io.filesystems import CompressionTypes, FileSystems

    raw = CompressionTypes.UNCOMPRESSED
    with FileSystems.create(shard_path(config, split, shard), compression_type=raw) as out:
        for path, _ in sorted(pieces):
            with FileSystems.open(path, compression_type=raw) as f:
                while block := f.read(8 << 20):
                    out.write(block)
                    report.inc("bytes_written", len(block))
    FileSystems.delete([p for p, _ in pieces])
    count = sum(n for _, n in pieces)
    report.inc("shards")
    report.inc("examples", count)
    report.progress()
    return split, shard, count


def finish(config: PrepareConfig, plan: Plan, examples: Examples, shards, metrics: Mapping, seconds: float,
           runner: str) -> dict:
    """Fill in empty shards, write each split's spec, then ``dataset.json``; remove the temporary folder."""
    from apache_beam.io.filesystems import FileSystems

    counts = {split: 0 for split in _output_splits(config)}
    for split, _, n in shards:
        counts[split] += n
    written = {(s, i) for s, i, _ in shards}
    spec = {k: {"dtype": s.dtype.name, "shape": s.shape.as_list()} for k, s in examples.spec().items()}
    for split, n in counts.items():
        for shard in range(config.num_shards):
            if (split, shard) not in written:  # a shard no example went to: an empty, valid file
                FileSystems.create(shard_path(config, split, shard)).close()
        _write_json(_join(config.output, f"{split}.spec.json"),
                    {"num_examples": n, "num_shards": config.num_shards, "compression": None, "features": spec})
    if FileSystems.exists(config.tmp):
        FileSystems.delete([config.tmp])
    manifest = {
        "name": config.name or config.output.rstrip("/").split("/")[-1],
        "task": config.task, "format": config.format, "runner": runner,
        "splits": {k: {"num_examples": n, "num_shards": config.num_shards} for k, n in counts.items()},
        "features": spec, "roles": examples.roles(), "class_names": list(plan.class_names),
        "preprocessing": _preprocessing(config, plan), "vocabulary": plan.vocabulary,
        "sources": {k: list(v) for k, v in config.splits.items()},
        "metrics": dict(sorted(metrics.items())), "seconds": round(seconds, 1),
    }
    _write_json(_join(config.output, prepared_lib.MANIFEST), manifest)  # last: the dataset is finished
    return manifest


def _preprocessing(config, plan) -> dict:
    out = {"task": config.task}
    if config.task in ("bert", "gpt"):
        out.update(tokenizer=plan.tokenizer_name, sequence_length=config.sequence_length)
    if config.task == "image":
        out.update(image_size=list(config.image_size), channels=config.channels,
                   resize="bigkeras.data.preprocessing.prepare_images (bilinear), rounded to uint8")
    return out


def _output_splits(config) -> list[str]:
    splits = list(config.splits)
    if config.validation_fraction and "validation" not in splits:
        splits.append("validation")
    return splits


def _write_json(path: str, record) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as f:
        f.write((json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _join(base: str, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(str(base), *parts)


# --- Survey: class names and the vocabulary sample. ---------------------------------------


def survey_unit(config: PrepareConfig, unit: Unit, report: Report) -> Iterator[tuple[str, object]]:
    """``("label", name)`` and ``("sample", (hash, path, number, text))`` items of one file."""
    if unit.label is not None:
        yield "label", unit.label
    if config.format == "folders" and config.task == "image":
        return
    sample = config.vocabulary is not None and unit.split == config.vocabulary_split
    if not sample and not (config.labelled and config.classes is None and unit.label is None):
        return
    for number, record in read_records(config, unit, report):
        if "label" in record and unit.label is None:
            yield "label", record["label"]
        for text in (record.get(k) for k in ("text", "source", "target")):
            if sample and text is not None:
                key = f"{unit.path}\0{number}"
                yield "sample", (_unit_interval(key), unit.path, number, text)
        report.inc("records")
        report.progress()


def learn_plan(config: PrepareConfig, labels, sample, population: int) -> Plan:
    """The :class:`Plan` from the survey: sorted labels, and the vocabulary learned on the sample."""
    classes = tuple(config.classes) if config.classes is not None else tuple(sorted(set(labels)))
    tokenizer, name, vocabulary = config.tokenizer, config.tokenizer_name, None
    if config.vocabulary is not None:
        if not sample:
            raise BadInputError(f"{_ERROR_MARK}no text in split {config.vocabulary_split!r} to learn a vocabulary on")
        texts = [t for _, _, _, t in sorted(sample, key=lambda s: (s[1], s[2]))]  # reading order
        folder = _join(config.output, VOCABULARY_DIR)
        start = time.monotonic()
        vocabulary = _learn_vocabulary(config, texts, folder)
        vocabulary.update(directory=VOCABULARY_DIR, sample={
            "texts": len(texts), "of": population, "split": config.vocabulary_split,
            "rule": "the sample_size texts with the smallest blake2b hash of (file, line number)",
        })
        print(f"[vocabulary] {vocabulary['kind']}: {vocabulary['vocabulary_size']:,} tokens learned on "
              f"{len(texts):,} of {population:,} texts in {time.monotonic() - start:.0f} s -> {folder}",
              file=sys.stderr, flush=True)
        from bigkeras.data import vocabulary as vocabulary_lib

        tokenizer = vocabulary_lib.loader(config.vocabulary, folder, **vocabulary["options"])
        name = f"{config.vocabulary} (learned, {VOCABULARY_DIR}/)"
    return Plan(classes, tokenizer, name, vocabulary)


def _learn_vocabulary(config, texts, folder) -> dict:
    from bigkeras.data import vocabulary as vocabulary_lib

    return vocabulary_lib.learn(config.vocabulary, texts, folder, vocabulary_size=config.vocabulary_size)


def needs_survey(config: PrepareConfig) -> bool:
    return config.vocabulary is not None or (config.labelled and config.classes is None)


# --- Beam transforms. ---------------------------------------------------------------------


def _beam_counter(stage: str):
    from apache_beam.metrics import Metrics

    cache = {}

    def inc(name, n):
        if name not in cache:
            cache[name] = Metrics.counter(stage, name)
        cache[name].inc(n)

    return inc


def _dofns():
    """The DoFn classes, defined once apache_beam is imported (so this module imports without it)."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.transforms.window import GlobalWindows

    class MatchFn(beam.DoFn):
        def __init__(self, config, stage):
            self.config, self.stage = config, stage

        def process(self, item):
            report = Report(self.stage, strict=self.config.strict, counter=_beam_counter(self.stage))
            yield from match_units(self.config, *item, report)

    class SurveyFn(beam.DoFn):
        def __init__(self, config):
            self.config = config

        def process(self, unit):
            report = Report("survey", strict=self.config.strict, counter=_beam_counter("survey"))
            for tag, value in survey_unit(self.config, unit, report):
                yield beam.pvalue.TaggedOutput(tag, value)

    class PrepareFn(beam.DoFn):
        def __init__(self, config, plan):
            self.config, self.plan = config, plan

        def setup(self):
            self.examples = Examples(self.config, self.plan)
            self.examples.setup()
            self.spec = self.examples.spec()
            self.report = Report("prepare", strict=self.config.strict, counter=_beam_counter("prepare"))

        def start_bundle(self):
            self.writer = PieceWriter(self.config)

        def process(self, unit):
            for split, record in prepare_unit(self.config, self.examples, self.spec, unit, self.report):
                self.writer.write(split, record)

        def finish_bundle(self):
            for item in self.writer.close():
                yield GlobalWindows.windowed_value(item)
            self.report.progress(force=True)
            Metrics.distribution("prepare", "worker_peak_rss_bytes").update(peak_rss_bytes())
            Metrics.distribution("prepare", "worker_peak_anon_bytes").update(self.report.peak_anon)

    class ConcatFn(beam.DoFn):
        def __init__(self, config):
            self.config = config

        def process(self, item):
            (split, shard), pieces = item
            report = Report("write", strict=self.config.strict, counter=_beam_counter("write"))
            yield concat_pieces(self.config, split, shard, list(pieces), report)

    return MatchFn, SurveyFn, PrepareFn, ConcatFn


def _units(p, config, stage):
    import apache_beam as beam

    match_fn = _dofns()[0]
    patterns = [(split, pattern) for split, ps in config.splits.items() for pattern in ps]
    return (p | f"{stage}/Patterns" >> beam.Create(patterns)
            | f"{stage}/Match" >> beam.ParDo(match_fn(config, stage))
            | f"{stage}/Spread" >> beam.Reshuffle())  # the files go to the workers


def _run(build: Callable, options) -> tuple[dict, object]:
    """Build and run one pipeline; a strict stop becomes a plain :class:`BadInputError`."""
    import apache_beam as beam

    pipeline = beam.Pipeline(options=options)
    build(pipeline)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except BadInputError:
        raise
    except Exception as e:  # the runner wraps the worker's error; keep its message
        found = re.search(re.escape(_ERROR_MARK) + r"[^\n]*", str(e))
        if found:
            raise BadInputError(found.group(0).split("(stopping: --strict)")[0] + "(stopping: --strict)") from None
        raise
    return _metrics(result), result


def _metrics(result) -> dict:
    out = {}
    query = result.metrics().query()
    for counter in query["counters"]:
        key = f"{counter.key.metric.namespace}/{counter.key.metric.name}"
        out[key] = out.get(key, 0) + int(counter.committed or counter.attempted or 0)
    for dist in query["distributions"]:
        value = dist.committed or dist.attempted
        if value is not None and value.count:
            out[f"{dist.key.metric.namespace}/{dist.key.metric.name}_max"] = int(value.max)
    return out


def _survey_beam(config: PrepareConfig, options) -> tuple[Plan, dict]:
    import apache_beam as beam

    _, survey_fn, _, _ = _dofns()
    labels_path, sample_path = _join(config.tmp, "labels.json"), _join(config.tmp, "sample.json")

    def build(p):
        found = _units(p, config, "survey") | "survey/Read" >> beam.ParDo(survey_fn(config)).with_outputs(
            "label", "sample")
        (found.label | "survey/Classes" >> beam.Distinct() | "survey/ClassList" >> beam.combiners.ToList()
         | "survey/WriteClasses" >> beam.Map(lambda v: _write_json(labels_path, sorted(v))))
        sample = found.sample | "survey/Sample" >> beam.combiners.Top.Smallest(config.sample_size, key=_first)
        count = found.sample | "survey/Population" >> beam.combiners.Count.Globally()
        (sample | "survey/WriteSample" >> beam.Map(
            lambda s, n: _write_json(sample_path, {"of": n, "sample": s}), n=beam.pvalue.AsSingleton(count)))

    metrics, _ = _run(build, options)
    labels, drawn = _read_json(labels_path, []), _read_json(sample_path, {"of": 0, "sample": []})
    return learn_plan(config, labels, [tuple(s) for s in drawn["sample"]], drawn["of"]), metrics


def _first(item):
    return item[0]


def _read_json(path: str, default):
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return default
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def prepare(config: PrepareConfig, pipeline_args: Sequence[str] = DEFAULT_PIPELINE_ARGS, *,
            overwrite: bool = False) -> dict:
    """Run the preparation on Beam: survey (if needed), prepare, write; returns ``dataset.json``.

    Args:
        config: what to read and write (:class:`PrepareConfig`).
        pipeline_args: Beam pipeline options, e.g. ``["--runner=DirectRunner",
            "--direct_running_mode=multi_processing", "--direct_num_workers=2"]`` or
            ``["--runner=DataflowRunner", "--project=...", "--region=...", "--temp_location=gs://..."]``.
        overwrite: replace a finished dataset in ``config.output`` (its manifest is removed first).

    Returns:
        The manifest written to ``dataset.json``, with ``metrics`` (Beam counters per stage:
        examples, bytes, bad input by kind, ``prepare/worker_peak_rss_bytes_max``).

    Raises:
        BadInputError: with ``config.strict``, the first bad input, naming the file.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    start = time.monotonic()
    _start_output(config, overwrite)
    options = PipelineOptions(list(pipeline_args))
    runner = options.get_all_options().get("runner") or "DirectRunner"
    metrics, plan = {}, Plan(tuple(config.classes or ()), config.tokenizer, config.tokenizer_name)
    if needs_survey(config):
        plan, metrics = _survey_beam(config, options)
        _log_stage("survey", metrics)
    examples = Examples(config, plan)
    _, _, prepare_fn, concat_fn = _dofns()
    shards_path = _join(config.tmp, "shards.json")

    def build(p):
        (_units(p, config, "prepare") | "prepare/Examples" >> beam.ParDo(prepare_fn(config, plan))
         | "write/GroupPieces" >> beam.GroupByKey() | "write/Concat" >> beam.ParDo(concat_fn(config))
         | "write/List" >> beam.combiners.ToList()
         | "write/Record" >> beam.Map(lambda shards: _write_json(shards_path, shards)))

    more, _ = _run(build, options)
    metrics.update(more)
    _log_stage("prepare", metrics)
    shards = [tuple(s) for s in _read_json(shards_path, [])]
    return finish(config, plan, examples, shards, metrics, time.monotonic() - start, runner)


def prepare_in_process(config: PrepareConfig, *, overwrite: bool = False) -> dict:
    """The same preparation in this one process, without Beam (small data; the benchmark's baseline).

    The same functions read, survey, preprocess and write as in :func:`prepare`; only the
    parallel runner is missing. Returns the manifest.
    """
    import heapq

    start = time.monotonic()
    _start_output(config, overwrite)
    reports = {s: Report(s, strict=config.strict) for s in ("prepare", "survey", "write")}
    units = [u for split, ps in config.splits.items() for p in ps for u in match_units(config, split, p,
                                                                                       reports["prepare"])]
    plan = Plan(tuple(config.classes or ()), config.tokenizer, config.tokenizer_name)
    if needs_survey(config):
        labels, sample, population = set(), [], 0
        for unit in units:
            for tag, value in survey_unit(config, unit, reports["survey"]):
                if tag == "label":
                    labels.add(value)
                else:
                    population += 1
                    heapq.heappush(sample, (-value[0], value))  # keep the sample_size smallest hashes
                    if len(sample) > config.sample_size:
                        heapq.heappop(sample)
        plan = learn_plan(config, labels, [v for _, v in sample], population)
    examples = Examples(config, plan)
    examples.setup()
    spec, writer = examples.spec(), PieceWriter(config)
    for unit in units:
        for split, record in prepare_unit(config, examples, spec, unit, reports["prepare"]):
            writer.write(split, record)
    grouped = {}
    for key, piece in writer.close():
        grouped.setdefault(key, []).append(piece)
    shards = [concat_pieces(config, s, i, pieces, reports["write"]) for (s, i), pieces in sorted(grouped.items())]
    metrics = {f"{r.stage}/{k}": v for r in reports.values() for k, v in r.counts.items()}
    reports["prepare"].progress(force=True)
    metrics["prepare/worker_peak_rss_bytes_max"] = peak_rss_bytes()
    metrics["prepare/worker_peak_anon_bytes_max"] = reports["prepare"].peak_anon
    return finish(config, plan, examples, shards, metrics, time.monotonic() - start, "in-process")


def _start_output(config: PrepareConfig, overwrite: bool) -> None:
    """Refuse to overwrite a finished dataset unless asked; then unfinish it first."""
    from apache_beam.io.filesystems import FileSystems

    manifest = _join(config.output, prepared_lib.MANIFEST)
    if FileSystems.exists(manifest):
        if not overwrite:
            raise FileExistsError(f"`output` {config.output} already holds a prepared dataset ({manifest}); "
                                  "pass overwrite=True (--overwrite) to replace it.")
        FileSystems.delete([manifest])  # from here on it is not a finished dataset
    old = [m.path for m in FileSystems.match([_join(config.output, "*-of-*.tfrecord")])[0].metadata_list]
    old += [p for p in (config.tmp, _join(config.output, VOCABULARY_DIR)) if FileSystems.exists(p)]
    if old:
        FileSystems.delete(old)
    FileSystems.mkdirs(config.tmp)


def _log_stage(stage: str, metrics: Mapping) -> None:
    lines = [f"  {k}  {v:,}" for k, v in sorted(metrics.items()) if k.split("/")[0] in (stage, "write", "survey")]
    print(f"[{stage}] done:\n" + "\n".join(lines), file=sys.stderr, flush=True)
