"""Request bounds: what one request may ask of the model server, checked in the graph first.

A model server holds every request it serves in one process: a request that asks for gigabytes
takes the server down with every model in it. Each signature kind states its limits here, in
one place, and each is enforced inside the exported graph before the first expensive op:

- every signature: rows per request (``max_batch_size``: the first axis of every input);
- string inputs: bytes per string, before any tokenizer or image decoder reads it;
- ``serving_bytes``: width x height read from the encoded image's header (PNG, JPEG, GIF,
  BMP) before anything is decoded; images are then decoded one at a time and resized before
  any float cast, so a request's memory is one image at the bound plus its model inputs;
- ``generate`` / ``translate``: rows x the key/value cache each row needs (every block's keys
  and values at the full decode length, measured on the model) within a memory budget.

A request over a bound is refused with ``INVALID_ARGUMENT`` and a message naming the bound.
The bounds are written beside the compatibility report
(``assets.extra/bigkeras_request_bounds.json``), ``bigkeras inspect`` prints them, and
``serving-command --batching`` sizes its batches by them.

    bounds = RequestBounds.for_text(sequence_length=64)
    bounds.max_rows   # 256
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Mapping

from bigkeras import checks

BOUNDS_FILE = "bigkeras_request_bounds.json"  # in <version>/assets.extra/, which TF Serving ignores

MAX_BATCH_SIZE = 256  # the most rows any default allows
IMAGE_INPUT_ELEMENTS = 2**22  # default rows x H x W x C of one image request (16 MiB of float32)
TEXT_INPUT_TOKENS = 2**14  # default rows x sequence length of one text request
MAX_STRING_BYTES = 64 * 1024  # default bytes per text string (about 10,000 words)
MAX_IMAGE_BYTES = 8 * 2**20  # default bytes per encoded image
MAX_IMAGE_PIXELS = 4096 * 4096  # default width x height of one encoded image
KV_CACHE_BUDGET_BYTES = 256 * 2**20  # default key/value cache of one generate/translate request

KINDS = ("tensor", "image", "image_bytes", "text", "generate", "translate")


@dataclasses.dataclass(frozen=True)
class RequestBounds:
    """The limits of one signature; ``None`` where a bound does not apply to its inputs.

    Attributes:
        kind: str, one of ``KINDS``.
        max_batch_size: int, rows per request.
        max_string_bytes: int, bytes per string input (text, prompt, source, image bytes).
        max_image_pixels: int, width x height of one encoded image (x frames, for a GIF).
        kv_cache_budget_bytes: int, the key/value cache one request may need.
        kv_cache_bytes_per_row: int, the cache one row needs (measured on the model).
    """

    kind: str
    max_batch_size: int
    max_string_bytes: int | None = None
    max_image_pixels: int | None = None
    kv_cache_budget_bytes: int | None = None
    kv_cache_bytes_per_row: int | None = None

    def __post_init__(self):
        checks.one_of("kind", self.kind, KINDS)
        checks.positive_int("max_batch_size", self.max_batch_size)
        for name in ("max_string_bytes", "max_image_pixels", "kv_cache_budget_bytes", "kv_cache_bytes_per_row"):
            if getattr(self, name) is not None:
                checks.positive_int(name, getattr(self, name))
        if (self.kv_cache_budget_bytes is None) != (self.kv_cache_bytes_per_row is None):
            raise ValueError("`kv_cache_budget_bytes` and `kv_cache_bytes_per_row` go together.")
        if self.kv_cache_budget_bytes is not None and self.kv_cache_bytes_per_row > self.kv_cache_budget_bytes:
            raise ValueError(
                f"`kv_cache_budget_bytes` ({_mib(self.kv_cache_budget_bytes)}) is below the cache of one row "
                f"({_mib(self.kv_cache_bytes_per_row)}): no request could be served; raise the budget."
            )

    @property
    def max_rows(self) -> int:
        """The most rows a request may have: ``max_batch_size``, or fewer when the cache budget says so."""
        if self.kv_cache_budget_bytes is None:
            return self.max_batch_size
        return min(self.max_batch_size, self.kv_cache_budget_bytes // self.kv_cache_bytes_per_row)

    def with_max_batch_size(self, max_batch_size: int | None) -> RequestBounds:
        """These bounds with another row limit (None keeps this one)."""
        if max_batch_size is None:
            return self
        return dataclasses.replace(self, max_batch_size=checks.positive_int("max_batch_size", max_batch_size))

    def to_json(self) -> dict:
        """The bounds as stored in the export's metadata (``max_rows`` included)."""
        return {**{k: v for k, v in dataclasses.asdict(self).items() if v is not None}, "max_rows": self.max_rows}

    # ---------------------------------------------------------------- defaults, one per kind

    @classmethod
    def for_tensor(cls, elements_per_row: int) -> RequestBounds:
        """Model inputs sent as tensors (features, token ids): rows sized by the row's elements."""
        return cls("tensor", _rows_within(IMAGE_INPUT_ELEMENTS, elements_per_row))

    @classmethod
    def for_images(cls, height: int, width: int, channels: int) -> RequestBounds:
        """Float images ``(batch, H, W, C)``: rows sized so a request's input stays near 16 MiB."""
        return cls("image", _rows_within(IMAGE_INPUT_ELEMENTS, height * width * channels))

    @classmethod
    def for_image_bytes(cls, height: int, width: int, channels: int) -> RequestBounds:
        """Encoded images: the float signature's rows, bytes and pixels per image."""
        rows = _rows_within(IMAGE_INPUT_ELEMENTS, height * width * channels)
        return cls("image_bytes", rows, max_string_bytes=MAX_IMAGE_BYTES, max_image_pixels=MAX_IMAGE_PIXELS)

    @classmethod
    def for_text(cls, sequence_length: int) -> RequestBounds:
        """Raw strings to a classifier or encoder: rows sized by the model's sequence length."""
        return cls("text", _rows_within(TEXT_INPUT_TOKENS, sequence_length), max_string_bytes=MAX_STRING_BYTES)

    @classmethod
    def for_decoding(cls, kind: str, kv_cache_bytes_per_row: int,
                     kv_cache_budget_bytes: int = KV_CACHE_BUDGET_BYTES) -> RequestBounds:
        """``generate`` / ``translate``: rows bounded by the key/value cache budget too."""
        return cls(kind, MAX_BATCH_SIZE, max_string_bytes=MAX_STRING_BYTES,
                   kv_cache_budget_bytes=kv_cache_budget_bytes, kv_cache_bytes_per_row=kv_cache_bytes_per_row)


def bucket_sizes(max_rows: int) -> list[int]:
    """Row counts a warmup file covers and server-side batching pads to: 1, 2, 4, ... and ``max_rows``."""
    checks.positive_int("max_rows", max_rows)
    return sorted({2**i for i in range(max_rows.bit_length()) if 2**i <= max_rows} | {max_rows})


# ----------------------------------------------------------------------------- in-graph checks
# TensorFlow is imported where a graph is built, so that reading bounds needs only the JSON.


def check_request(inputs: Mapping, specs: Mapping, bounds: RequestBounds) -> dict:
    """Rows and string bytes of every input, checked before the signature runs.

    Args:
        inputs: ``{name: tensor}`` as the request sent them.
        specs: ``{name: tf.TensorSpec}``; inputs with a batch axis get the row bound.
        bounds: the signature's ``RequestBounds``.

    Returns:
        The inputs, each passed on only after every check held.
    """
    import tensorflow as tf

    conditions = []
    inputs = {name: tf.ensure_shape(value, specs[name].shape) for name, value in inputs.items()}  # rank first
    for name, value in inputs.items():
        if specs[name].shape.rank:
            rows = tf.shape(value, out_type=tf.int64)[0]
            conditions.append(_assert(rows <= bounds.max_rows, f"request bound: `{name}` has more than "
                                      f"{bounds.max_rows} rows (max_batch_size of this signature; send fewer rows "
                                      f"per request)", rows))
        if value.dtype == tf.string and bounds.max_string_bytes is not None:
            longest = tf.reduce_max(tf.strings.length(tf.reshape(value, [-1]), unit="BYTE"))
            conditions.append(_assert(longest <= bounds.max_string_bytes, f"request bound: a `{name}` string is over "
                                      f"{bounds.max_string_bytes} bytes (max_string_bytes of this signature)", longest))
    with tf.control_dependencies(conditions):
        return {name: tf.identity(value) for name, value in inputs.items()}


def check_image_headers(image_bytes, max_image_pixels: int):
    """Width x height of every encoded image, from its header, at most ``max_image_pixels``.

    PNG (IHDR), JPEG (the SOF marker, ``tf.io.extract_jpeg_shape``), GIF (the logical screen,
    times an upper bound on its frames) and BMP (the info header); any other bytes are refused.
    Nothing is decoded.

    Returns:
        ``image_bytes``, passed on only after the check held.
    """
    import tensorflow as tf

    pixels = tf.map_fn(_header_pixels, image_bytes, fn_output_signature=tf.int64)  # (batch,), -1: unknown format
    pixels = tf.concat([pixels, [0]], 0)  # an empty batch reduces to 0
    known = _assert(tf.reduce_all(pixels >= 0), "request bound: `image_bytes` must be PNG, JPEG, GIF or BMP images "
                    "(index of the first other one follows)", tf.argmin(pixels))
    with tf.control_dependencies([known]):
        largest = tf.reduce_max(pixels)
        small = _assert(largest <= max_image_pixels, f"request bound: an image in `image_bytes` is over "
                        f"{max_image_pixels} pixels (width x height, from its header: max_image_pixels)", largest)
    with tf.control_dependencies([small]):
        return tf.identity(image_bytes)


def check_kv_cache(rows, bounds: RequestBounds):
    """An assertion op: ``rows`` x the cache per row within the budget (``generate``, ``translate``)."""
    import tensorflow as tf

    need = tf.cast(rows, tf.int64) * bounds.kv_cache_bytes_per_row
    return _assert(need <= bounds.kv_cache_budget_bytes, f"request bound: the key/value cache this request needs is over "
                   f"{bounds.kv_cache_budget_bytes} bytes ({_mib(bounds.kv_cache_bytes_per_row)} per row: at most "
                   f"{bounds.max_rows} rows per request)", need)


def _assert(condition, message: str, value):
    import tensorflow as tf

    return tf.debugging.Assert(condition, [message, value], summarize=1)


def _header_pixels(data):
    """Width x height (x frames) of one encoded image from its first bytes; -1 for other formats."""
    import tensorflow as tf

    head = tf.io.decode_raw(tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 32), "\0" * 32]), 0, 32),
                            tf.uint8)
    b = tf.cast(head, tf.int64)  # (32,)

    def big_endian(at, n):
        return sum(b[at + i] * 256 ** (n - 1 - i) for i in range(n))

    def little_endian(at, n):
        return sum(b[at + i] * 256**i for i in range(n))

    def starts(prefix: bytes):
        return tf.reduce_all(tf.equal(head[: len(prefix)], tf.constant(list(prefix), tf.uint8)))

    def signed32(value):
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    def jpeg():
        shape = tf.cast(tf.io.extract_jpeg_shape(data), tf.int64)
        return shape[0] * shape[1]

    def gif():  # every frame after the first starts right after a block terminator: 0x00 0x2C
        frames = tf.cast(tf.size(tf.strings.split(data, "\x00,")), tf.int64)
        return little_endian(6, 2) * little_endian(8, 2) * frames

    png = big_endian(16, 4) * big_endian(20, 4)  # IHDR: width, height (each < 2**31)
    bmp = signed32(little_endian(18, 4)) * signed32(little_endian(22, 4))  # height < 0: top-down rows
    return tf.case([
        (starts(b"\x89PNG\r\n\x1a\n"), lambda: png),
        (starts(b"\xff\xd8\xff"), jpeg),
        (starts(b"GIF8"), gif),
        (starts(b"BM"), lambda: bmp),
    ], default=lambda: tf.constant(-1, tf.int64))  # the prefixes exclude each other


# ----------------------------------------------------------------------------- metadata


def write_bounds(export_dir: str | os.PathLike, bounds: Mapping[str, RequestBounds]) -> pathlib.Path:
    """Write ``{signature: bounds}`` to ``<export_dir>/assets.extra/bigkeras_request_bounds.json``."""
    path = pathlib.Path(export_dir) / "assets.extra" / BOUNDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: b.to_json() for name, b in sorted(bounds.items())}, indent=2) + "\n")
    return path


def load_bounds(export_dir: str | os.PathLike) -> dict[str, dict]:
    """The ``{signature: bounds}`` an export states (empty for an export made before bounds existed)."""
    path = pathlib.Path(export_dir) / "assets.extra" / BOUNDS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a bigkeras request-bounds file: {err}") from None


def summary(bounds: Mapping[str, Mapping]) -> str:
    """One line per signature, as ``bigkeras inspect`` prints them."""
    if not bounds:
        return "  none stated (exported before request bounds existed)"
    lines = []
    for name, b in sorted(bounds.items()):
        parts = [f"{b['max_rows']} rows"]
        if "max_string_bytes" in b:
            parts.append(f"{b['max_string_bytes']:,} bytes per string")
        if "max_image_pixels" in b:
            side = math.isqrt(b["max_image_pixels"])
            parts.append(f"{b['max_image_pixels']:,} pixels per image ({side}x{side})")
        if "kv_cache_budget_bytes" in b:
            parts.append(f"key/value cache {_mib(b['kv_cache_budget_bytes'])} per request "
                         f"({_mib(b['kv_cache_bytes_per_row'])} per row)")
        lines.append(f"  {name}: " + ", ".join(parts))
    return "\n".join(lines)


def _rows_within(budget: int, per_row: int) -> int:
    """The largest power of two of rows within ``budget`` (1 to ``MAX_BATCH_SIZE``)."""
    rows = max(1, budget // max(1, per_row))
    return min(MAX_BATCH_SIZE, 2 ** (rows.bit_length() - 1))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
