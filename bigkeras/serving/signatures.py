"""Serving signatures: raw inputs in, named outputs out, preprocessing inside the graph.

Every bigkeras builder ends in a ``Dense`` named ``logits``; a serving signature wraps the model
so that a TF Serving client sends what a user has (float images, encoded JPEG/PNG bytes, raw
strings, prompts) and receives named outputs (``probabilities``, ``class_id``, ``logits``,
``class_name``, ``completion``). Each signature:

- names its inputs (``images``, ``image_bytes``, ``text``, ``prompt``, ``max_new_tokens``);
- checks each input's rank and fixed dimensions with ``tf.ensure_shape``, because a loaded
  signature does not: a request without the batch axis would otherwise reach a kernel and can
  crash the server process (a CHECK failure) instead of returning InvalidArgument;
- states its request bounds (``bigkeras.serving.bounds``: rows, bytes per string, pixels per
  image, key/value cache) and checks them in the graph before its first expensive op;
- carries a batch of ``examples`` (real inputs when the caller passes them), used for the
  warmup file and the parity check.

Traced inside ``compiled_model_calls`` (``export_saved_model(..., jit_compile=True)``), each
signature runs its model call (or decode loop) as an XLA-compiled function and its string ops
(tokenizers, image decoding) in TF's executor around it; the rows are padded to the next
``bounds.bucket_sizes`` row count first (and prompts to multiples of
``generation.PROMPT_BUCKET`` tokens), so the compilations are bounded and a warmup file can
cover every one of them.

The factories return ``{signature_name: Signature}`` dicts for ``export_saved_model``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
import dataclasses
import threading
from dataclasses import dataclass, field
import keras
import numpy as np
import tensorflow as tf

from bigkeras import checks
from bigkeras.data.preprocessing import PIXEL_SCALE, prepare_images
from bigkeras.serving.bounds import (KV_CACHE_BUDGET_BYTES, MAX_STRING_BYTES, RequestBounds, bucket_sizes,
                                     check_image_headers, check_kv_cache, check_request)

SERVING_DEFAULT = "serving_default"


@dataclass(frozen=True)
class Signature:
    """One serving signature: a function of named tensors returning a dict of named tensors.

    Attributes:
        fn: callable taking keyword arguments named after ``inputs`` and returning a dict.
        inputs: the input specs, keyed by input name (the names clients send).
        examples: a batch of example inputs keyed like ``inputs`` (numpy arrays), for warmup
            and parity.
        resources: layers or TF resources (lookup tables, tokenizers) the export must track.
        bounds: the ``RequestBounds`` of a request; by default rows sized by the inputs'
            elements per row, and ``MAX_STRING_BYTES`` per string when an input is a string.
            ``fn`` checks the kind-specific ones (image headers, key/value cache) itself;
            calling the signature checks rows and string bytes first.
        shape_variants: values of scalar inputs that change the compiled shapes (for
            ``generate``, one ``max_new_tokens`` per prompt-width bucket); an XLA export's
            warmup sends each at every row bucket. Empty: the rows alone decide the shapes.
    """

    fn: Callable[..., dict]
    inputs: Mapping[str, tf.TensorSpec]
    examples: Mapping[str, np.ndarray] = field(repr=False)
    resources: tuple = field(default=(), repr=False)
    bounds: RequestBounds | None = None
    shape_variants: tuple = field(default=(), repr=False)

    def __post_init__(self):
        if self.bounds is None:
            per_row = max(int(np.prod([d or 64 for d in spec.shape[1:]])) for spec in self.inputs.values())
            bounds = RequestBounds.for_tensor(per_row)
            if any(spec.dtype == tf.string for spec in self.inputs.values()):
                bounds = dataclasses.replace(bounds, max_string_bytes=MAX_STRING_BYTES)
            object.__setattr__(self, "bounds", bounds)

    def __call__(self, **inputs) -> dict:
        """Run the signature as the export does: the request bounds first, then ``fn``."""
        return self.fn(**check_request(inputs, self.inputs, self.bounds))


# ----------------------------------------------------------------------------- XLA


_COMPILING = threading.local()  # .buckets: the row buckets of the signature being traced, or unset


@contextlib.contextmanager
def compiled_model_calls(max_rows: int):
    """Trace signatures with XLA-compiled model calls, rows padded to ``bucket_sizes(max_rows)``.

    Entered by ``export_saved_model(..., jit_compile=True)`` around each signature's tracing;
    outside it (the Keras reference outputs, eager calls) signatures run uncompiled.
    """
    previous = getattr(_COMPILING, "buckets", None)
    _COMPILING.buckets = tuple(bucket_sizes(max_rows))
    try:
        yield
    finally:
        _COMPILING.buckets = previous


def compiling() -> tuple[int, ...] | None:
    """The row buckets while tracing inside ``compiled_model_calls``, else None."""
    return getattr(_COMPILING, "buckets", None)


def traced(signatures: Mapping[str, Signature]) -> dict[str, Signature]:
    """``signatures`` with each ``fn`` run as one ``tf.function`` of its input specs.

    Calling a signature eagerly (a recipe's samples or scores) then runs the graph TF Serving
    runs, and ``export_saved_model`` reuses that trace instead of tracing again (for
    ``generate``, a while loop over the whole model: seconds). Traced once per mode: the
    executor's, and the XLA one inside ``compiled_model_calls``.

    Only for signatures whose tokenizer keeps no graph state from one trace to the next
    (``bible_gpt``'s byte-pair tokenizer does not): keras-hub's SentencePiece builds its TF
    tokenizer inside the first graph that calls it, which a traced call cannot run, and a
    tokenizer that caches a constant on its first graph call breaks a second trace (the XLA
    one). The signature factories therefore return untraced signatures.
    """
    import inspect

    def graph(sig: Signature) -> Signature:
        names = list(inspect.signature(sig.fn).parameters)
        if sorted(names) != sorted(sig.inputs):
            raise ValueError(f"a signature's function takes {names}, but its inputs are {sorted(sig.inputs)}")
        spec = [sig.inputs[name] for name in names]
        per_mode = {}

        def fn(**inputs):
            mode = compiling()
            if mode not in per_mode:
                function = tf.function(sig.fn, input_signature=spec, autograph=False)
                with tf.init_scope():  # traced on its own, not inside the graph of a first caller
                    function.get_concrete_function()
                per_mode[mode] = function
            return per_mode[mode](**inputs)

        return dataclasses.replace(sig, fn=fn)

    return {name: graph(sig) for name, sig in signatures.items()}


def call_model(model, features):
    """``model(features, training=False)``; XLA-compiled on bucket-padded rows inside ``compiled_model_calls``."""
    buckets = compiling()
    if buckets is None:
        return model(features, training=False)
    compiled = tf.function(lambda f: model(f, training=False), jit_compile=True, autograph=False)  # one per call site
    rows = tf.shape(tf.nest.flatten(features)[0])[0]
    outputs = compiled(pad_rows(features, rows, buckets))
    return tf.nest.map_structure(lambda t: t[:rows], outputs)


def bucket_for(rows, buckets: Sequence[int]):
    """The smallest of ``buckets`` (ascending) holding ``rows``, a scalar tensor (the largest beyond them)."""
    sizes = tf.constant(list(buckets), tf.int32)
    index = tf.reduce_sum(tf.cast(sizes < tf.cast(rows, tf.int32), tf.int32))
    return tf.gather(sizes, tf.minimum(index, len(buckets) - 1))


def pad_rows(features, rows, buckets: Sequence[int]):
    """Every tensor of ``features`` padded with zero rows from ``rows`` to its bucket size."""
    size = bucket_for(rows, buckets)

    def pad(t):
        padding = tf.concat([[[0, tf.maximum(size - rows, 0)]], tf.zeros((t.shape.rank - 1, 2), tf.int32)], 0)
        return tf.pad(t, padding)

    return tf.nest.map_structure(pad, features)


# ----------------------------------------------------------------------------- classifiers


def classifier_outputs(logits: tf.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """The named outputs of every classifier signature, from ``(batch, classes)`` logits."""
    logits = tf.cast(logits, tf.float32)  # mixed-precision models emit float16/bfloat16
    outputs = {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "class_id": tf.argmax(logits, axis=-1, output_type=tf.int32),  # (batch,)
    }
    if class_names is not None:
        outputs["class_name"] = tf.gather(tf.constant(list(class_names)), outputs["class_id"])
    return outputs


def classifier_signatures(
    model: keras.Model,
    *,
    class_names: Sequence[str] | None = None,
    examples: Mapping[str, np.ndarray] | np.ndarray | None = None,
) -> dict[str, Signature]:
    """A ``serving_default`` signature over the model's own (named) inputs.

    For models whose inputs are already tensors a client can send (tabular features, token
    ids with a padding mask).

    Args:
        model: a ``keras.Model`` whose (single) output is ``(batch, classes)`` logits.
        class_names: optional sequence of str; adds a ``class_name`` output.
        examples: optional batch of real inputs (an array, or a dict keyed by input name);
            random inputs of the right shape and dtype otherwise.

    Returns:
        ``{"serving_default": Signature}`` with outputs ``logits``, ``probabilities``,
        ``class_id`` (and ``class_name``).

    Example:
        >>> sigs = classifier_signatures(bigkeras.build("mlp_tiny"), class_names=["a", "b", "c"])
    """
    _check_class_names(model, class_names)
    specs = {t.name: _tensor_spec(t.shape, t.dtype, t.name) for t in model.inputs}
    examples = _as_input_dict(examples, specs) if examples is not None else _random_inputs(specs)

    def serve(**inputs):
        inputs = {k: tf.ensure_shape(v, specs[k].shape) for k, v in inputs.items()}
        features = inputs if len(inputs) > 1 else next(iter(inputs.values()))
        return classifier_outputs(call_model(model, features), class_names)

    return {SERVING_DEFAULT: Signature(serve, specs, examples, (model,))}  # bounds sized by the inputs


def image_classifier_signatures(
    model: keras.Model,
    *,
    class_names: Sequence[str] | None = None,
    scale: float = PIXEL_SCALE,
    offset: float = 0.0,
    image_size: tuple[int, int] | None = None,
    examples: np.ndarray | None = None,
) -> dict[str, Signature]:
    """Two signatures for an image classifier: float images, and encoded JPEG/PNG bytes.

    ``serving_default`` takes ``images``, float32 ``(batch, H, W, C)`` exactly as the model
    takes them (already normalised). ``serving_bytes`` takes ``image_bytes``, a string
    ``(batch,)`` of encoded JPEG/PNG/GIF/BMP images, and applies the training preprocessing
    inside the graph: decode to ``C`` channels (so RGB files feed grayscale models and vice
    versa), resize to ``(H, W)`` (bilinear), then ``pixels * scale + offset``. Undecodable
    bytes are an InvalidArgument error.

    Args:
        model: a ``keras.Model`` with one ``(batch, H, W, C)`` float input and logits output.
        class_names: optional sequence of str; adds a ``class_name`` output.
        scale: float, multiplies decoded ``[0, 255]`` pixels. Default ``1/255``.
        offset: float, added after scaling (e.g. ``-1.0`` with ``scale=2/255``). Default 0.
        image_size: ``(H, W)`` to resize decoded images to; required when the model's
            input has variable spatial dimensions.
        examples: optional ``(batch, H, W, C)`` uint8 array of real images in ``[0, 255]``;
            random images otherwise. Both signatures' examples are made from it.

    Returns:
        ``{"serving_default": Signature, "serving_bytes": Signature}``, each with outputs
        ``logits``, ``probabilities``, ``class_id`` (and ``class_name``).

    Example:
        >>> sigs = image_classifier_signatures(bigkeras.build("cnn_tiny"), scale=1 / 255)
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = [tuple(t.shape) for t in model.inputs]
        raise ValueError(f"`model` must have one (batch, H, W, C) image input, got inputs {shapes}.")
    _check_class_names(model, class_names)
    _, height, width, channels = model.inputs[0].shape
    checks.one_of("model input channels", channels, (1, 3, 4))
    if image_size is not None:
        height, width = checks.positive_ints("image_size", image_size)
    if height is None or width is None:
        raise ValueError(
            f"`image_size` is required: the model's input {tuple(model.inputs[0].shape)} has "
            "variable spatial dimensions, so decoded images need a fixed size to batch."
        )
    image_spec = tf.TensorSpec((None, height, width, channels), tf.float32, "images")
    bytes_spec = tf.TensorSpec((None,), tf.string, "image_bytes")

    if examples is None:
        rng = np.random.default_rng(0)
        examples = rng.integers(0, 256, size=(2, height, width, channels), dtype=np.uint8)
    examples = np.asarray(examples)
    if examples.ndim != 4 or examples.shape[1:] != (height, width, channels):
        raise ValueError(
            f"`examples` must be uint8 images of shape (batch, {height}, {width}, {channels}), "
            f"got {examples.shape}."
        )
    encoded = np.array([tf.io.encode_png(image).numpy() for image in examples.astype(np.uint8)], dtype=object)
    floats = (examples.astype(np.float32) * scale + offset).astype(np.float32)

    def serve_images(images):
        images = tf.ensure_shape(images, image_spec.shape)
        return classifier_outputs(call_model(model, images), class_names)

    def decode(data):  # one encoded image -> (H, W, C) float32, the training pipeline's preprocessing
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)  # uint8
        return prepare_images(image, size=(height, width), scale=scale, offset=offset)

    bytes_bounds = RequestBounds.for_image_bytes(height, width, channels)

    def serve_bytes(image_bytes):
        image_bytes = tf.ensure_shape(image_bytes, bytes_spec.shape)
        image_bytes = check_image_headers(image_bytes, bytes_bounds.max_image_pixels)  # before any decoding
        # One image at a time: a request holds one decoded image at the pixel bound, not a batch of them.
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec((height, width, channels), tf.float32),
                           parallel_iterations=1)
        return serve_images(images)

    return {
        SERVING_DEFAULT: Signature(serve_images, {"images": image_spec}, {"images": floats}, (model,),
                                   RequestBounds.for_images(height, width, channels)),
        "serving_bytes": Signature(serve_bytes, {"image_bytes": bytes_spec}, {"image_bytes": encoded}, (model,),
                                   bytes_bounds),
    }


def text_classifier_signatures(
    model: keras.Model,
    tokenizer,
    *,
    class_names: Sequence[str] | None = None,
    sequence_length: int | None = None,
    examples: Sequence[str] | None = None,
) -> dict[str, Signature]:
    """A ``serving_default`` signature for a text classifier that takes raw strings.

    The tokenizer runs inside the graph; its ids are padded or truncated to the model's
    sequence length. A model with one integer input gets the ids; a model with named inputs
    ``token_ids`` and ``padding_mask`` gets both (the mask marks non-pad positions).

    Args:
        model: a ``keras.Model`` taking token ids and returning ``(batch, classes)`` logits.
        tokenizer: an adapted ``keras.layers.TextVectorization`` (``output_mode="int"``) or a
            keras-hub ``Tokenizer`` (WordPiece/BytePair graphs need ``tensorflow_text`` at
            load time; TF Serving's standard build links those ops).
        class_names: optional sequence of str; adds a ``class_name`` output.
        sequence_length: int, required when the model's sequence axis is variable.
        examples: optional sequence of str, real texts for warmup and parity.

    Returns:
        ``{"serving_default": Signature}``: input ``text`` string ``(batch,)``; outputs
        ``logits``, ``probabilities``, ``class_id`` (and ``class_name``).

    Example:
        >>> vectorizer = keras.layers.TextVectorization(max_tokens=1000, output_sequence_length=16)
        >>> vectorizer.adapt(texts)
        >>> sigs = text_classifier_signatures(model, vectorizer, class_names=["neg", "pos"])
    """
    _check_class_names(model, class_names)
    inputs = {t.name: t for t in model.inputs}
    ids_name = "token_ids" if "token_ids" in inputs else model.inputs[0].name
    if len(inputs) > 1 and set(inputs) != {"token_ids", "padding_mask"}:
        raise ValueError(
            f"`model` must take token ids, or named inputs 'token_ids' and 'padding_mask'; "
            f"got inputs {sorted(inputs)}."
        )
    length = inputs[ids_name].shape[1] if sequence_length is None else sequence_length
    if length is None:
        raise ValueError("`sequence_length` is required: the model's sequence axis is variable.")
    checks.positive_int("sequence_length", length)
    pad_id = _pad_id(tokenizer)
    text_spec = tf.TensorSpec((None,), tf.string, "text")
    examples = np.array(list(examples) if examples is not None else _example_texts(tokenizer), dtype=object)
    tokenizer(tf.constant(list(examples[:1])))  # builds an adapted layer, so the export can track it

    def serve(text):
        text = tf.ensure_shape(text, text_spec.shape)
        ids = _fit_length(tokenizer(text), length, pad_id)  # (batch, length)
        features = {
            "token_ids": tf.cast(ids, inputs[ids_name].dtype),
            "padding_mask": tf.cast(ids != pad_id, inputs.get("padding_mask", inputs[ids_name]).dtype),
        }
        features = features if len(inputs) > 1 else features["token_ids"]
        return classifier_outputs(call_model(model, features), class_names)

    bounds = RequestBounds.for_text(length)
    return {SERVING_DEFAULT: Signature(serve, {"text": text_spec}, {"text": examples}, (model, tokenizer), bounds)}


def gpt_signatures(
    model: keras.Model,
    tokenizer,
    *,
    max_length: int,
    sampler="greedy",
    stop_token_ids: Sequence[int] | None = None,
    examples: Sequence[str] | None = None,
    example_max_new_tokens: int = 4,
    kv_cache_budget_bytes: int = KV_CACHE_BUDGET_BYTES,
) -> dict[str, Signature]:
    """A ``generate`` signature: prompt strings in, completion strings out, decoded in-graph.

    The prompt is tokenized, left-padded (truncated from the left when too long) to
    ``max_length - max_new_tokens`` tokens, and continued by ``bigkeras.generation``'s cached
    decode loop (one ``tf.while_loop`` over a fixed ``(batch, heads, max_length, head_dim)``
    key/value cache), so exactly ``max_new_tokens`` tokens are generated unless every row
    hits a stop token first. Stop tokens and everything after them are left out of the output.

    Args:
        model: a ``gpt`` model (inputs ``token_ids`` and ``padding_mask``).
        tokenizer: a keras-hub ``Tokenizer`` (its ``detokenize`` makes the text) or an adapted
            ``keras.layers.TextVectorization`` (vocabulary words joined with spaces).
        max_length: int, prompt plus completion tokens; fixes the cache shape and must not
            exceed the model's position embedding length.
        sampler: a name in ``bigkeras.generation.SAMPLERS`` or a keras-hub ``Sampler``.
        stop_token_ids: optional sequence of int that end a row's completion.
        examples: optional sequence of str, prompts for warmup and parity.
        example_max_new_tokens: int, ``max_new_tokens`` of the example request. Default 4.
        kv_cache_budget_bytes: int, the key/value cache one request may need; every row
            holds a ``max_length`` cache, so this bounds the rows. Default 256 MiB.

    Returns:
        ``{"generate": Signature}``: inputs ``prompt`` string ``(batch,)`` and
        ``max_new_tokens`` int32 scalar in ``[1, max_length)``; outputs ``completion`` string
        ``(batch,)`` and ``completion_ids`` int32 ``(batch, max_new_tokens)`` (0 after a stop).
        A scalar input means REST clients use the columnar form (``{"inputs": ...}``).

    Example:
        >>> sigs = gpt_signatures(bigkeras.build("gpt_tiny"), keras_hub.tokenizers.ByteTokenizer(),
        ...                       max_length=32)
    """
    from bigkeras.generation import (  # keras-hub samplers; load on use
        PROMPT_BUCKET, cache_bytes_per_row, make_bucketed_decode, make_generate_fn)

    checks.positive_int("max_length", max_length)
    if max_length < 2:
        raise ValueError(f"`max_length` must be at least 2 (one prompt and one new token), got {max_length}.")
    checks.positive_int("example_max_new_tokens", example_max_new_tokens)
    if example_max_new_tokens >= max_length:
        raise ValueError(f"`example_max_new_tokens` must be below `max_length` ({max_length}), got {example_max_new_tokens}.")
    generate_fn = make_generate_fn(
        model, max_length=max_length, sampler=sampler, stop_token_ids=stop_token_ids,
        jit_compile=False,  # TF Serving: no XLA by default
    )
    stops = tf.constant(list(stop_token_ids or [-1]), tf.int32)
    pad_id = _pad_id(tokenizer)
    prompt_spec = tf.TensorSpec((None,), tf.string, "prompt")
    count_spec = tf.TensorSpec((), tf.int32, "max_new_tokens")
    examples = np.array(list(examples) if examples is not None else _example_texts(tokenizer), dtype=object)
    tokenizer(tf.constant(list(examples[:1])))  # builds an adapted layer, so the export can track it
    bounds = RequestBounds.for_decoding(
        "generate", cache_bytes_per_row(model, input_length=1, max_length=max_length), kv_cache_budget_bytes)

    compiled = []  # the XLA decode loop, made on first use inside `compiled_model_calls`

    def decode(ids, mask, width, max_new_tokens):
        """Columns of the new tokens: ``(token_ids, padding_mask)``, (batch, max_new_tokens)."""
        buckets = compiling()
        if buckets is None:
            out = generate_fn(ids, mask)  # (batch, max_length)
            return out["token_ids"][:, width:], out["padding_mask"][:, width:]
        if not compiled:
            compiled.append(make_bucketed_decode(model, max_length=max_length, sampler=sampler,
                                                 stop_token_ids=stop_token_ids))
        rows = tf.shape(ids)[0]
        bucket = -(-width // PROMPT_BUCKET) * PROMPT_BUCKET  # the prompt, left-padded to a multiple of 16
        ids, mask = (tf.pad(t, [[0, 0], [bucket - width, 0]]) for t in (ids, mask))
        out = compiled[0](*pad_rows((ids, mask), rows, buckets), max_new_tokens)  # (bucket rows, buffer)
        return tuple(out[k][:rows, bucket:bucket + max_new_tokens] for k in ("token_ids", "padding_mask"))

    def generate(prompt, max_new_tokens):
        prompt = tf.ensure_shape(prompt, prompt_spec.shape)
        max_new_tokens = tf.ensure_shape(max_new_tokens, count_spec.shape)
        with tf.control_dependencies([  # before any op uses it: 2**31-1 would overflow max_length - it
                tf.debugging.assert_greater(max_new_tokens, 0, message="max_new_tokens must be at least 1"),
                tf.debugging.assert_less(max_new_tokens, max_length, message=f"max_new_tokens must be below {max_length}")]):
            max_new_tokens = tf.identity(max_new_tokens)
        with tf.control_dependencies([check_kv_cache(tf.shape(prompt)[0], bounds)]):  # before tokenizing
            prompt = tf.identity(prompt)
        width = max_length - max_new_tokens
        ids, mask = _left_pad(_ragged_ids(tokenizer(prompt), pad_id), width)  # (batch, width)
        new_ids, new_mask = decode(ids, mask, width, max_new_tokens)  # (batch, max_new_tokens)
        keep = tf.logical_and(new_mask, tf.reduce_all(new_ids[..., None] != stops, -1))
        return {
            "completion": _detokenize(tokenizer, tf.ragged.boolean_mask(new_ids, keep)),
            "completion_ids": tf.where(keep, new_ids, 0),
        }

    example = {"prompt": examples, "max_new_tokens": np.array(example_max_new_tokens, np.int32)}
    inputs = {"prompt": prompt_spec, "max_new_tokens": count_spec}
    # One max_new_tokens per prompt-width bucket: the XLA loop compiles once per bucket (and row count).
    widths = range(PROMPT_BUCKET, -(-(max_length - 1) // PROMPT_BUCKET) * PROMPT_BUCKET + 1, PROMPT_BUCKET)
    variants = tuple({"max_new_tokens": np.array(max_length - w if w < max_length else 1, np.int32)} for w in widths)
    return {"generate": Signature(generate, inputs, example, (model, tokenizer), bounds, variants)}


def default_signatures(model: keras.Model, *, class_names: Sequence[str] | None = None) -> dict[str, Signature]:
    """Signatures inferred from the model's inputs: images get both image signatures.

    A single float ``(batch, H, W, C)`` input with 1, 3 or 4 channels and fixed ``H, W`` is
    an image classifier (bytes preprocessing: ``scale=1/255``); anything else gets
    ``classifier_signatures``. Text and GPT models need their tokenizer: use
    ``text_classifier_signatures`` or ``gpt_signatures``.
    """
    (first, *rest) = model.inputs
    shape = tuple(first.shape)
    is_image = (
        not rest
        and len(shape) == 4
        and shape[-1] in (1, 3, 4)
        and None not in shape[1:]
        and "float" in keras.backend.standardize_dtype(first.dtype)
    )
    if is_image:
        return image_classifier_signatures(model, class_names=class_names)
    return classifier_signatures(model, class_names=class_names)


# ----------------------------------------------------------------------------- helpers


def _fit_length(ids, length: int, pad_id: int) -> tf.Tensor:
    """Pad with ``pad_id`` or truncate a ragged or dense ``(batch, ?)`` id tensor to ``length``."""
    if isinstance(ids, tf.RaggedTensor):
        return ids.to_tensor(default_value=tf.cast(pad_id, ids.dtype), shape=[None, length])
    ids = ids[:, :length]
    padding = [[0, 0], [0, length - tf.shape(ids)[1]]]
    return tf.ensure_shape(tf.pad(ids, padding, constant_values=tf.cast(pad_id, ids.dtype)), [None, length])


def _ragged_ids(ids, pad_id: int) -> tf.RaggedTensor:
    """Token ids as a ragged ``(batch, ?)`` int32 tensor (TextVectorization pads densely)."""
    if isinstance(ids, list):  # keras-hub tokenizers return lists when run eagerly
        ids = tf.ragged.constant(ids, dtype=tf.int32, ragged_rank=1)
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.convert_to_tensor(ids)
        ids = tf.RaggedTensor.from_tensor(ids, padding=tf.cast(pad_id, ids.dtype))
    return tf.cast(ids, tf.int32)


def _left_pad(ids: tf.RaggedTensor, width) -> tuple[tf.Tensor, tf.Tensor]:
    """Keep each row's last ``width`` ids, left-padded with 0: ``(ids, mask)``, (batch, width)."""
    lengths = tf.minimum(ids.row_lengths(), tf.cast(width, tf.int64))
    starts = ids.row_lengths() - lengths
    kept = tf.RaggedTensor.from_row_lengths(
        tf.gather(ids.flat_values, tf.ragged.range(ids.row_starts() + starts, ids.row_limits()).flat_values), lengths
    )
    right = kept.to_tensor(0, shape=tf.stack([kept.nrows(), tf.cast(width, tf.int64)]))  # right-padded
    # Reverse the real tokens in place, then the whole row: padding moves to the left.
    left = tf.reverse(tf.reverse_sequence(right, lengths, seq_axis=1, batch_axis=0), axis=[1])
    mask = tf.reverse(tf.sequence_mask(lengths, width, tf.int32), axis=[1])
    return left, mask


def _detokenize(tokenizer, ids: tf.RaggedTensor) -> tf.Tensor:
    """Ragged ids to one string per row."""
    if isinstance(tokenizer, keras.layers.TextVectorization):
        vocabulary = tf.constant(tokenizer.get_vocabulary())
        return tf.strings.reduce_join(tf.gather(vocabulary, ids), axis=-1, separator=" ")
    text = tokenizer.detokenize(ids)
    return tf.convert_to_tensor(text)


def _pad_id(tokenizer) -> int:
    if isinstance(tokenizer, keras.layers.TextVectorization):
        return 0  # TextVectorization reserves id 0 for padding
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def _example_texts(tokenizer) -> list[str]:
    """Two example strings made of the tokenizer's own vocabulary (plus one unknown word)."""
    vocab = [w for w in tokenizer.get_vocabulary() if isinstance(w, str) and w.isalpha()]
    words = vocab[:12] or ["hello", "world"]
    return [" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :] + ["zzyzx"])]


def _check_class_names(model: keras.Model, class_names) -> None:
    if class_names is None:
        return
    if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
        raise ValueError(f"`class_names` must be a sequence of str, got {class_names!r}.")
    classes = model.outputs[0].shape[-1]
    if len(class_names) != classes:
        raise ValueError(f"`class_names` must name all {classes} classes of the model, got {len(class_names)} names.")


def _tensor_spec(shape, dtype, name: str) -> tf.TensorSpec:
    return tf.TensorSpec(tuple(shape), tf.as_dtype(keras.backend.standardize_dtype(dtype)), name)


def _random_inputs(specs: Mapping[str, tf.TensorSpec], batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, spec in specs.items():
        shape = (batch, *(8 if d is None else d for d in spec.shape[1:]))
        if name.endswith("mask"):
            out[name] = np.ones(shape, spec.dtype.as_numpy_dtype)
        elif spec.dtype.is_integer:
            out[name] = rng.integers(0, 2, size=shape).astype(spec.dtype.as_numpy_dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(spec.dtype.as_numpy_dtype)
    return out


def _as_input_dict(examples, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(examples, Mapping):
        if len(specs) != 1:
            raise ValueError(f"`examples` must be a dict keyed by the model's inputs {sorted(specs)}.")
        examples = {next(iter(specs)): examples}
    if set(examples) != set(specs):
        raise ValueError(f"`examples` must have keys {sorted(specs)}, got {sorted(examples)}.")
    return {k: np.asarray(v, specs[k].dtype.as_numpy_dtype) for k, v in examples.items()}


# ----------------------------------------------------------------------------- preprocessors
# Additive (sequence recipes): a classifier whose keras-hub preprocessor makes its inputs.


def preprocessed_text_signatures(
    model: keras.Model,
    preprocessor,
    *,
    class_names: Sequence[str] | None = None,
    examples: Sequence[str] | None = None,
) -> dict[str, Signature]:
    """A ``serving_default`` for a text classifier fed by a keras-hub preprocessor, in-graph.

    For models with several inputs that a tokenizer alone does not make, such as BERT's
    ``token_ids``, ``segment_ids`` and ``padding_mask`` with ``[CLS]`` and ``[SEP]`` packed in
    (``keras_hub.models.BertTextClassifierPreprocessor``). The preprocessor that made the
    training inputs runs inside the graph, so serving cannot drift from training.

    Args:
        model: a ``keras.Model`` taking the preprocessor's output dict, returning
            ``(batch, classes)`` logits.
        preprocessor: a keras-hub ``Preprocessor`` (or any layer) mapping a string tensor
            ``(batch,)`` to the model's inputs.
        class_names: optional sequence of str; adds a ``class_name`` output.
        examples: optional sequence of str, real texts for warmup and parity.

    Returns:
        ``{"serving_default": Signature}``: input ``text`` string ``(batch,)``; outputs
        ``logits``, ``probabilities``, ``class_id`` (and ``class_name``).

    Example:
        >>> preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=64)
        >>> sigs = preprocessed_text_signatures(classifier, preprocessor, class_names=["neg", "pos"])
    """
    _check_class_names(model, class_names)
    text_spec = tf.TensorSpec((None,), tf.string, "text")
    examples = np.array(list(examples) if examples is not None else ["a fine example", "zzyzx"], dtype=object)
    preprocessor(tf.constant(list(examples[:1])))  # builds the layer, so the export can track it

    def serve(text):
        features = preprocessor(tf.ensure_shape(text, text_spec.shape))
        return classifier_outputs(call_model(model, features), class_names)

    bounds = RequestBounds.for_text(_sequence_length(preprocessor))
    return {SERVING_DEFAULT: Signature(serve, {"text": text_spec}, {"text": examples}, (model, preprocessor), bounds)}


def embedding_signatures(
    backbone: keras.Model,
    preprocessor,
    *,
    pooling: str = "mean",
    normalize: bool = True,
    examples: Sequence[str] | None = None,
) -> dict[str, Signature]:
    """An ``embed`` signature for a sentence encoder: raw strings in, sentence vectors out.

    The tokenizer and packing run inside the graph (a keras-hub preprocessor), then the
    backbone, then the checkpoint's pooling: the mean of ``sequence_output`` over the real
    tokens (or the ``[CLS]`` vector) and, with ``normalize``, L2 normalisation, as
    sentence-transformers computes it. Cosine similarity of two outputs is then a dot product.

    Args:
        backbone: a ``BertBackbone`` (outputs ``sequence_output``).
        preprocessor: a keras-hub preprocessor mapping a string tensor ``(batch,)`` to the
            backbone's inputs (e.g. ``BertTextClassifierPreprocessor`` with the checkpoint's
            ``sequence_length``; longer texts are truncated as the checkpoint's tokenizer does).
        pooling: ``"mean"`` (default) or ``"cls"``.
        normalize: bool, L2-normalise the vectors. Default True.
        examples: optional sequence of str, real texts for warmup and parity.

    Returns:
        ``{"embed": Signature}``: input ``text`` string ``(batch,)``; output ``embedding``
        float32 ``(batch, hidden)``.

    Example:
        >>> settings = checkpoints.sentence_embedding_settings("all-MiniLM-L6-v2")
        >>> sigs = embedding_signatures(backbone, preprocessor, pooling=settings["pooling"])
    """
    from bigkeras.layers.transformer import MaskedMeanPooling

    checks.one_of("pooling", pooling, ("mean", "cls"))
    text_spec = tf.TensorSpec((None,), tf.string, "text")
    examples = np.array(list(examples) if examples is not None else ["a fine example", "zzyzx"], dtype=object)
    preprocessor(tf.constant(list(examples[:1])))  # builds the layer, so the export can track it
    mean = MaskedMeanPooling(dtype="float32")

    def embed(text):
        features = preprocessor(tf.ensure_shape(text, text_spec.shape))
        sequence = tf.cast(call_model(backbone, features)["sequence_output"], tf.float32)
        vectors = mean(sequence, padding_mask=features["padding_mask"]) if pooling == "mean" else sequence[:, 0]
        return {"embedding": tf.math.l2_normalize(vectors, axis=-1) if normalize else vectors}

    bounds = RequestBounds.for_text(_sequence_length(preprocessor))
    return {"embed": Signature(embed, {"text": text_spec}, {"text": examples}, (backbone, preprocessor), bounds)}


def _sequence_length(preprocessor) -> int:
    """The token length a preprocessor packs to (keras-hub preprocessors' ``sequence_length``)."""
    length = getattr(preprocessor, "sequence_length", None)
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"`preprocessor` must pack to a fixed `sequence_length`, got {length!r} "
                         f"from {type(preprocessor).__name__}.")
    return length
