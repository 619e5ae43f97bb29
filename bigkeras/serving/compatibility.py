"""Which TF Serving releases can load an export: the ops its graph needs against each release.

TF Serving registers the ops of the TensorFlow it is built on (TF Serving X.Y on TensorFlow
X.Y) plus the TF Text op libraries its build links, and nothing else: a graph op outside
those fails the load with "Op type not registered". ``compatibility_report(ops)`` checks an op set
against the tables below and says, for every release 2.14 to 2.21, whether it loads
(``"loads"``), which ops rule it out (``"fails"``), or that the tables cannot tell
(``"unchecked"``). ``export_saved_model`` writes the report to
``<version>/assets.extra/bigkeras_serving_compatibility.json`` next to the warmup file (TF
Serving ignores other files there); ``bigkeras inspect`` shows it, ``bigkeras verify
--tf-serving 2.19`` fails on a release that cannot load the export, and ``bigkeras
serving-command`` picks an image tag that loads every model.

    report = compatibility_report(graph_ops("saved_models/reviews_minilm/1"))
    report["minimum_release"]   # "2.20": keras-hub's BERT packing needs TFText>RoundRobinTrim
    check_release(report, "2.19")  # raises IncompatibleRelease naming that op and 2.20

Where each row comes from is written beside it. What could not be established here is marked:
the Docker image tags are the tensorflow-serving-api versions on PyPI (Docker Hub cannot be
reached from here), and TF Serving 2.21's TF Text version is inferred (see ``RELEASES``).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bigkeras.serving import _tf_ops

REPORT_FILE = "bigkeras_serving_compatibility.json"
REPORT_DIR = "assets.extra"
FORMAT = 2  # 2: the "xla" and "server_flags" entries
# TF Serving runs XLA-compiled functions on CPU only with this flag (since 2.5; without it such a
# model fails at its first request: tensorflow_serving/model_servers/main.cc).
XLA_CPU_FLAG = "--xla_cpu_compilation_enabled=true"
XLA_CPU_SINCE = "2.5"


class IncompatibleRelease(RuntimeError):
    """The export needs ops that the named TF Serving release does not register."""


@dataclass(frozen=True)
class ServingRelease:
    """One TF Serving minor release and what it links.

    Attributes:
        version: str, the minor release, e.g. ``"2.19"``.
        image_tag: str, the newest patch release's tag, e.g. ``"2.19.1"`` (``tensorflow/serving:2.19.1``).
        tensorflow: str, the TensorFlow minor release it is built on (its core ops).
        tf_text: str, the TF Text release its build links (its ``ops_lib``).
        source: str, where ``tf_text`` comes from.
    """

    version: str
    image_tag: str
    tensorflow: str
    tf_text: str
    source: str


# TF Text linked by each release: the `org_tensorflow_text` http_archive (strip_prefix
# "text-X.Y.Z") in tensorflow/serving's tensorflow_serving/workspace.bzl.
#   - 2.14 to 2.19: text-2.12.1. The per-tag reading is an earlier session's (shared
#     FIELD_NOTES, "workspace.bzl at each release tag"); checked here against a stored
#     workspace.bzl version pinning text-2.12.1 and against tensorflow/serving PR #4057
#     (2025-02-06, after 2.18: "updates the embedded TensorFlow Text from version 2.12.1").
#   - 2.20: text-2.20.0 (FIELD_NOTES, same reading).
#   - 2.21: text-2.20.0, inferred, not read at the tag: 2.20 pins it, the newest stored
#     workspace.bzl (newer than 2.21: abseil 20260526, gRPC 1.81) still pins text-2.20.0, and
#     the 2.22.0-rc0 release notes are the first to move it ("TF-Text to 2.22.0rc0").
# Image tags: the newest patch of each minor release of tensorflow-serving-api on PyPI
# (`pip index versions tensorflow-serving-api`); that the Docker tags match is unchecked.
_FROM_TAGS = "tensorflow/serving workspace.bzl at the release tag (FIELD_NOTES); PR #4057"
RELEASES = (
    ServingRelease("2.14", "2.14.1", "2.14", "2.12.1", _FROM_TAGS),
    ServingRelease("2.15", "2.15.1", "2.15", "2.12.1", _FROM_TAGS),
    ServingRelease("2.16", "2.16.1", "2.16", "2.12.1", _FROM_TAGS),
    ServingRelease("2.17", "2.17.1", "2.17", "2.12.1", _FROM_TAGS),
    ServingRelease("2.18", "2.18.1", "2.18", "2.12.1", _FROM_TAGS),
    ServingRelease("2.19", "2.19.1", "2.19", "2.12.1", _FROM_TAGS),
    ServingRelease("2.20", "2.20.0", "2.20", "2.20.0", "tensorflow/serving workspace.bzl at the release tag (FIELD_NOTES)"),
    ServingRelease("2.21", "2.21.0", "2.21", "2.20.0",
                   "inferred: 2.20 and the newest workspace.bzl pin text-2.20.0; 2.22.0-rc0 moves it"),
)
RELEASE_NAMES = tuple(r.version for r in RELEASES)

# The ops of each TF Text op library (the `py_tf_text_library` targets whose `<name>_cc` the
# `ops_lib` target of tensorflow_text/BUILD collects): measured by loading each
# `tensorflow_text/python/ops/_<name>.so` of tensorflow-text 2.21.1 alone and listing the ops it
# registered. Every name was also found in the same library of the 2.12.1 and 2.20.0 wheels,
# except trimmer_ops and utf8_binarize_op, which the 2.12.1 wheel does not have at all.
TF_TEXT_LIBRARIES = {
    "boise_offset_converter": ("TFText>BoiseTagsToOffsets", "TFText>OffsetsToBoiseTags"),
    "byte_splitter": ("TFText>ByteSplitByOffsets", "TFText>ByteSplitWithOffsets"),
    "constrained_sequence_op": ("ConstrainedSequence",),
    "fast_bert_normalizer": ("FastBertNormalize",),
    "fast_sentencepiece_tokenizer": ("TFText>FastSentencepieceDetokenize", "TFText>FastSentencepieceTokenize"),
    "fast_wordpiece_tokenizer": ("FastWordpieceTokenizeWithOffsets", "TFText>FastWordpieceDetokenize"),
    "mst_ops": ("MaxSpanningTree",),
    "ngrams_op": ("TFText>NgramsStringJoin",),
    "normalize_ops": ("CaseFoldUTF8", "FindSourceOffsets", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap"),
    "phrase_tokenizer": ("PhraseTokenize", "TFText>PhraseDetokenize"),
    "regex_split_ops": ("RegexSplitWithOffsets",),
    "sentence_breaking_ops": ("SentenceFragments",),
    "sentencepiece_tokenizer": (
        "SentencepieceDetokenizeOp", "SentencepieceIdToStringOp", "SentencepieceOp", "SentencepieceStringToIdOp",
        "SentencepieceTokenizeOp", "SentencepieceTokenizeWithOffsetsOp", "SentencepieceVocabSizeOp",
    ),
    "split_merge_from_logits_tokenizer": ("TokenizerFromLogits",),
    "split_merge_tokenizer": ("SplitMergeTokenizeWithOffsets",),
    "state_based_sentence_breaker_op": ("SentenceFragmentsV2",),
    "trimmer_ops": ("TFText>RoundRobinGenerateMasks", "TFText>RoundRobinTrim"),
    "unicode_script_tokenizer": ("UnicodeScriptTokenizeWithOffsets",),
    "utf8_binarize_op": ("TFText>Utf8Binarize",),
    "whitespace_tokenizer": ("WhitespaceTokenizeWithOffsets",),
    "whitespace_tokenizer_v2": ("TFText>WhitespaceTokenizeWithOffsetsV2",),
    "wordpiece_tokenizer": ("WordpieceTokenizeWithOffsets",),
}
TF_TEXT_OPS = {op: library for library, ops in TF_TEXT_LIBRARIES.items() for op in ops}

# The libraries in `ops_lib` (tensorflow/text tensorflow_text/BUILD) of each linked TF Text.
#   - 2.20.0: the stored BUILD's ops_lib lists every library above.
#   - 2.12.1: "leaves out trimmer_ops and utf8_binarize" (FIELD_NOTES, BUILD at v2.12.1); the
#     2.12.1 wheel confirms neither library existed in that release.
TF_TEXT_OPS_LIB = {
    "2.12.1": frozenset(TF_TEXT_LIBRARIES) - {"trimmer_ops", "utf8_binarize_op"},
    "2.20.0": frozenset(TF_TEXT_LIBRARIES),
}

# Registered by TensorFlow's pip package but run by calling back into Python, which the model
# server does not have: a graph with them never serves.
PYTHON_ONLY_OPS = frozenset({"EagerPyFunc", "PyFunc", "PyFuncStateless"})


def release(version: str) -> ServingRelease:
    """The ``ServingRelease`` for ``"2.19"`` (or ``"2.19.1"``, or an image tag ``"2.19.1-gpu"``).

    Raises:
        ValueError: the version is not in ``RELEASES``; the message lists the known ones.
    """
    minor = ".".join(str(version).split("-")[0].split(".")[:2])
    for r in RELEASES:
        if r.version == minor:
            return r
    raise ValueError(f"`tf_serving` must be a TF Serving release in {', '.join(RELEASE_NAMES)}, got {version!r}.")


def graph_ops(export_dir: str | os.PathLike) -> set[str]:
    """Every op type in a SavedModel's graphs and function libraries (calls to functions excluded).

    Raises:
        FileNotFoundError: ``export_dir`` has no ``saved_model.pb``.
    """
    return _ops(_read_saved_model(export_dir))


def xla_functions(export_dir: str | os.PathLike) -> list[str]:
    """The functions of a SavedModel's graph that must be compiled with XLA (``_XlaMustCompile``).

    Raises:
        FileNotFoundError: ``export_dir`` has no ``saved_model.pb``.
    """
    return _xla_functions(_read_saved_model(export_dir))


def _read_saved_model(export_dir: str | os.PathLike):
    from tensorflow.core.protobuf import saved_model_pb2

    path = pathlib.Path(export_dir) / "saved_model.pb"
    if not path.is_file():
        raise FileNotFoundError(f"`export_dir` must be a SavedModel version directory; {path} is missing.")
    return saved_model_pb2.SavedModel.FromString(path.read_bytes())


def _ops(saved) -> set[str]:
    ops, functions = set(), set()
    for meta in saved.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            functions.add(fn.signature.name)
            ops.update(node.op for node in fn.node_def)
    return ops - functions


def _xla_functions(saved) -> list[str]:
    return sorted({fn.signature.name for meta in saved.meta_graphs for fn in meta.graph_def.library.function
                   if fn.attr["_XlaMustCompile"].b})


def op_availability(op: str) -> dict[str, bool | None]:
    """``{release: True | False | None}``: whether each release registers ``op`` (None: unknown)."""
    if op in PYTHON_ONLY_OPS:
        return dict.fromkeys(RELEASE_NAMES, False)
    if op in TF_TEXT_OPS:
        return {r.version: TF_TEXT_OPS[op] in TF_TEXT_OPS_LIB[r.tf_text] for r in RELEASES}
    if op in _tf_ops.EVERY_RELEASE:
        return {r.version: r.tensorflow in _tf_ops.RELEASES or None for r in RELEASES}
    if op in _tf_ops.SOME_RELEASES:
        first, last = _tf_ops.SOME_RELEASES[op]
        return {r.version: _minor(first) <= _minor(r.tensorflow) <= _minor(last) for r in RELEASES}
    return dict.fromkeys(RELEASE_NAMES, False)  # neither TensorFlow nor TF Text: a custom op


def compatibility_report(ops: Iterable[str], *, xla: bool = False) -> dict:
    """Check a graph's ops against every TF Serving release in ``RELEASES``.

    Args:
        ops: the op types of an export's graph (``graph_ops(path)``).
        xla: bool, the graph has XLA-compiled functions (``xla_functions(path)``): the server
            needs ``XLA_CPU_FLAG`` (TF Serving 2.5+, so every release in the table).

    Returns:
        A JSON-ready dict: ``ops`` ({"tensorflow", "tf_text", "python_only", "unknown"} lists),
        ``releases`` ({release: {"status": "loads" | "fails" | "unchecked", "image",
        "missing": [...], "unchecked": [...]}}), ``loads_on`` (releases that load it),
        ``minimum_release`` (the oldest of them, or None), ``needs`` ({op: first release
        that has it, or None} for every op some release lacks), ``xla`` (bool),
        ``server_flags`` (the model server flags it needs: ``[XLA_CPU_FLAG]`` or none) and ``format``.

    Example:
        >>> compatibility_report({"MatMul", "TFText>RoundRobinTrim"})["minimum_release"]
        '2.20'
    """
    ops = sorted(set(ops))
    availability = {op: op_availability(op) for op in ops}
    releases = {}
    for r in RELEASES:
        missing = [op for op in ops if availability[op][r.version] is False]
        unknown = [op for op in ops if availability[op][r.version] is None]
        status = "fails" if missing else "unchecked" if unknown else "loads"
        releases[r.version] = {"status": status, "image": f"tensorflow/serving:{r.image_tag}",
                               "tf_text": r.tf_text, "missing": missing, "unchecked": unknown}
    loads_on = [v for v, entry in releases.items() if entry["status"] == "loads"]
    needs = {}
    for op, where in availability.items():
        if not all(where.values()):
            needs[op] = next((v for v in RELEASE_NAMES if where[v]), None)
    return {
        "format": FORMAT,
        "ops": {
            "tensorflow": [op for op in ops if op in _core_ops() and op not in PYTHON_ONLY_OPS | set(TF_TEXT_OPS)],
            "tf_text": [op for op in ops if op in TF_TEXT_OPS],
            "python_only": [op for op in ops if op in PYTHON_ONLY_OPS],
            "unknown": [op for op in ops if op not in TF_TEXT_OPS and op not in _core_ops()],
        },
        "releases": releases,
        "loads_on": loads_on,
        "minimum_release": loads_on[0] if loads_on else None,
        "needs": needs,
        "xla": bool(xla),
        "server_flags": [XLA_CPU_FLAG] if xla else [],
    }


def check_release(report: Mapping, tf_serving: str) -> dict:
    """Raise unless TF Serving ``tf_serving`` can load the export that ``report`` describes.

    Args:
        report: a ``compatibility_report``.
        tf_serving: str, a release such as ``"2.19"`` (or ``"2.19.1"``).

    Returns:
        The release's entry of ``report["releases"]`` (status ``"loads"`` or ``"unchecked"``).

    Raises:
        IncompatibleRelease: the release lacks ops the export needs; the message names each
            op and the first release that has it.
        ValueError: ``tf_serving`` is not a release in ``RELEASES``.
    """
    version = release(tf_serving).version
    entry = report["releases"][version]
    if entry["status"] == "fails":
        needs = report.get("needs", {})
        lines = [f"{op} (first in {needs[op]})" if needs.get(op) else f"{op} (in no TF Serving release)"
                 for op in entry["missing"]]
        minimum = report.get("minimum_release")
        hint = f"use TF Serving {minimum} or newer" if minimum else "no TF Serving release in the table loads it"
        raise IncompatibleRelease(
            f"TF Serving {version} cannot load this export: it does not register "
            f"{', '.join(lines)}; {hint}."
        )
    return entry


def report_path(export_dir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(export_dir) / REPORT_DIR / REPORT_FILE


def write_report(export_dir: str | os.PathLike, report: Mapping | None = None) -> pathlib.Path:
    """Write ``assets.extra/bigkeras_serving_compatibility.json`` (the export's own report by default)."""
    report = dict(report if report is not None else export_report(export_dir))
    path = report_path(export_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def load_report(export_dir: str | os.PathLike) -> dict:
    """The export's stored report when it matches these tables, else one computed from its graph."""
    path = report_path(export_dir)
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("format") == FORMAT and sorted(stored.get("releases", {})) == sorted(RELEASE_NAMES):
            return stored
    return export_report(export_dir)


def export_report(export_dir: str | os.PathLike) -> dict:
    """The ``compatibility_report`` of an export, computed from its graph (ops and XLA functions)."""
    saved = _read_saved_model(export_dir)
    return compatibility_report(_ops(saved), xla=bool(_xla_functions(saved)))


def newest_common_release(reports: Mapping[str, Mapping]) -> ServingRelease:
    """The newest release that loads every export in ``{name: report}``.

    Raises:
        IncompatibleRelease: no release in the table loads them all; the message names, per
            export, the releases that do.
    """
    common = [v for v in RELEASE_NAMES if all(rep["releases"][v]["status"] == "loads" for rep in reports.values())]
    if not common:
        detail = "; ".join(f"{name}: {', '.join(rep['loads_on']) or 'none'}" for name, rep in sorted(reports.items()))
        raise IncompatibleRelease(f"no TF Serving release in {', '.join(RELEASE_NAMES)} loads every model ({detail}).")
    return release(common[-1])


def summary(report: Mapping) -> str:
    """A few lines for ``bigkeras inspect``: ops by kind, then each release's status."""
    ops = report["ops"]
    lines = [f"ops: {len(ops['tensorflow'])} TensorFlow core"
             + (f", TF Text: {', '.join(ops['tf_text'])}" if ops["tf_text"] else ", no TF Text")
             + (f", Python-only: {', '.join(ops['python_only'])}" if ops["python_only"] else "")
             + (f", unknown: {', '.join(ops['unknown'])}" if ops["unknown"] else "")]
    minimum = report["minimum_release"]
    lines.append(f"minimum TF Serving release: {minimum}" if minimum else "no TF Serving release in the table loads it")
    if report.get("xla"):
        lines.append(f"XLA-compiled: the model server needs {XLA_CPU_FLAG} (TF Serving {XLA_CPU_SINCE}+)")
    for version, entry in report["releases"].items():
        detail = {"loads": "loads", "fails": "fails: lacks " + ", ".join(entry["missing"]),
                  "unchecked": "unchecked: " + ", ".join(entry["unchecked"])}[entry["status"]]
        lines.append(f"  {entry['image']:<28} {detail}")
    return "\n".join(lines)


def _core_ops() -> frozenset:
    return _tf_ops.EVERY_RELEASE | frozenset(_tf_ops.SOME_RELEASES)


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)
