"""Autoregressive generation for ``gpt``, ``seq2seq`` and ``t5`` models, cached, in one ``tf.while_loop``.

The loop and the token choice are keras-hub's samplers (``keras_hub.samplers``: greedy,
top-k, top-p, random with temperature, beam); this module supplies what they call at each
step: a model adapter that runs one new position against a fixed-shape key/value cache built
from the trained model's own layers (``CachedGPT``, ``CachedSeq2Seq``, ``CachedT5``).

``make_generate_fn`` returns the whole decode as one ``tf.function`` with a fixed input
signature, compiled with XLA by default (on 2 CPU cores XLA made this loop about 2x faster
at batch 1 and 1.3-1.6x at batch 8 than TF's executor, whose matmul kernels repack the
weights on every call), or ready to export as a TF Serving signature with
``jit_compile=False``::

    fn = make_generate_fn(model, max_length=64, sampler="greedy", stop_token_ids=[2])
    out = fn(prompt_ids, prompt_mask)  # int32 (batch, prompt_len), left-padded
    out["token_ids"]     # int32 (batch, 64): the prompt, then the generated tokens
    out["padding_mask"]  # bool (batch, 64): real tokens; false for prompt padding and
                         # for positions after a stop token (the stop token itself is true)

For a ``seq2seq`` model the callable takes ``(encoder_token_ids, encoder_padding_mask)`` and
the output starts with ``start_token_id``.
"""

from __future__ import annotations

import contextlib
import weakref

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from bigkeras import checks, private_apis
from bigkeras.layers.decoder import compiled_cache_writes

SAMPLERS = ("greedy", "top_k", "top_p", "random", "beam")
PROMPT_BUCKET = 16  # ``generate`` pads prompt lengths to a multiple of this


def get_sampler(sampler):
    """A ``keras_hub.samplers.Sampler`` from a name in ``SAMPLERS`` or an instance.

    Instances carry the knobs: ``keras_hub.samplers.TopKSampler(k=10, temperature=0.7,
    seed=1)``, ``TopPSampler(p=0.9)``, ``RandomSampler(temperature=0.8)``,
    ``BeamSampler(num_beams=4)``.
    """
    if isinstance(sampler, keras_hub.samplers.Sampler):
        return sampler
    checks.one_of("sampler", sampler, SAMPLERS)
    return keras_hub.samplers.get(sampler)


class SeededTopPSampler(keras_hub.samplers.Sampler):
    """Top-p (nucleus) sampling whose draws depend only on ``seed`` and the position: exportable.

    Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration". keras-hub's
    ``TopPSampler`` draws from a ``keras.random.SeedGenerator``, a variable that advances on
    every call: an export would have to track it, and the same request would give new text
    each time, so no parity check of the export could pass. This sampler keeps the same
    nucleus (the most probable tokens whose probabilities, before the last one, sum to at
    most ``p``) but draws with ``tf.random.stateless_categorical`` seeded by ``(seed,
    position)``: a completion is a fixed function of the prompt, like greedy decoding, without
    greedy's loops. Rows of a batch draw independently.

    Args:
        p: float in [0, 1], the nucleus mass (0 is greedy). Default 0.9.
        k: optional int, keep at most the ``k`` most probable tokens before the nucleus.
        seed: int, the draws' seed. Default 0.
        temperature: float, divides the logits first. Default 1.

    Example:
        >>> sigs = gpt_signatures(model, tokenizer, max_length=128, sampler=SeededTopPSampler(p=0.9))
    """

    def __init__(self, p: float = 0.9, k: int | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.p = checks.fraction("p", p, inclusive_high=True)
        self.k = None if k is None else checks.positive_int("k", k)
        self.seed = int(seed)
        self._index = None  # the position being sampled, set in each loop step

    def __call__(self, next, prompt, *args, index=0, **kwargs):
        def next_at(prompt, cache, position):
            # The draw's counter: tokens generated so far, the same wherever the prompt was padded to.
            self._index = position - index  # read by get_next_token in the same step of the loop
            return next(prompt, cache, position)

        return super().__call__(next_at, prompt, *args, index=index, **kwargs)

    def get_next_token(self, probabilities):
        probabilities = tf.convert_to_tensor(probabilities)
        k = tf.shape(probabilities)[-1] if self.k is None else tf.minimum(self.k, tf.shape(probabilities)[-1])
        top, ids = tf.math.top_k(probabilities, k=k)  # (batch, k), sorted
        keep = tf.math.cumsum(top, axis=-1, exclusive=True) <= self.p  # the first token always
        logits = tf.where(keep, tf.math.log(top), tf.constant(-1e9, top.dtype))
        step = tf.constant(0) if self._index is None else tf.cast(self._index, tf.int32)
        # Gumbel-max over uniforms from an integer hash: TF's stateless RNG gives other streams
        # under XLA than in TF's executor, and an export must draw the same in both.
        gumbel = -tf.math.log(-tf.math.log(_hash_uniform(self.seed, step, tf.shape(logits))))
        choice = tf.argmax(logits + tf.cast(gumbel, logits.dtype), axis=-1, output_type=tf.int32)  # (batch,)
        return tf.gather(ids, choice[:, None], batch_dims=1)[:, 0]

    def get_config(self):
        return {**super().get_config(), "p": self.p, "k": self.k, "seed": self.seed}


def _hash_uniform(seed: int, step, shape):
    """Uniforms in (0, 1) of ``shape`` (batch, k), a fixed function of ``(seed, step, row, column)``.

    A 32-bit integer hash (lowbias32) computed in int64 and masked, so TF's executor and XLA
    give the same bits.
    """
    mask = 0xFFFFFFFF
    rows = tf.range(tf.cast(shape[0], tf.int64), dtype=tf.int64)[:, None]
    columns = tf.range(tf.cast(shape[1], tf.int64), dtype=tf.int64)[None, :]
    shift, xor = tf.bitwise.right_shift, tf.bitwise.bitwise_xor
    x = (seed * 0x9E3779B1 + tf.cast(step, tf.int64) * 0x85EBCA77 + rows * 0xC2B2AE3D + columns * 0x27D4EB2F) & mask
    x = xor(x, shift(x, 16))
    x = (x * 0x7FEB352D) & mask
    x = xor(x, shift(x, 15))
    x = (x * 0x846CA68B) & mask
    x = xor(x, shift(x, 16))
    return (tf.cast(shift(x, 8), tf.float32) + 0.5) / 2.0**24  # 24 bits: exact in float32, never 0 or 1


def make_generate_fn(
    model: keras.Model,
    *,
    max_length: int,
    sampler="greedy",
    stop_token_ids=None,
    start_token_id: int | None = None,
    use_cache: bool = True,
    jit_compile: bool = True,
):
    """Build the decode loop for ``model`` as one ``tf.function``.

    Args:
        model: a ``gpt`` or ``seq2seq`` model; decoding calls its own layers.
        max_length: int, the length of the returned sequences (prompt included; for seq2seq,
            the start token included). Fixes the cache shape.
        sampler: a name in ``SAMPLERS`` or a ``keras_hub.samplers.Sampler``. Default greedy.
        stop_token_ids: optional sequence of int; a row stops after its first generated stop
            token (it then emits padding, id 0, which also freezes a beam's score), and the
            loop ends when every row has stopped.
        start_token_id: int, the decoder's first token; required for seq2seq models.
        use_cache: bool. False recomputes the whole sequence at every step (the naive
            reference the tests and the benchmark compare with). Default True.
        jit_compile: bool, compile the loop with XLA (default True). XLA compiles once per
            input shape (seconds); ``generate`` pads prompt lengths to multiples of
            ``PROMPT_BUCKET`` to reuse compilations. Exports for TF Serving use False: TF
            Serving runs XLA-compiled functions only with ``--xla_cpu_compilation_enabled``.

    Returns:
        A ``tf.function`` ``(ids, mask) -> {"token_ids", "padding_mask"}``, both
        ``(batch, max_length)``, with the input signature int32 ``(None, None)`` twice. For a
        GPT model ``ids`` is a left-padded prompt (``max_length`` > its length); for seq2seq it
        is the source sentence (padding on either side).

    Example:
        >>> fn = make_generate_fn(model, max_length=32, stop_token_ids=[0])
        >>> fn(tf.constant([[0, 5, 6], [4, 5, 6]]), tf.constant([[0, 1, 1], [1, 1, 1]]))
    """
    checks.positive_int("max_length", max_length)
    sampler = get_sampler(sampler)
    stop_token_ids = None if stop_token_ids is None else tuple(int(t) for t in stop_token_ids)
    names = {t.name for t in model.inputs}
    if "encoder_token_ids" in names:
        if start_token_id is None:
            raise ValueError("`start_token_id` is required to generate from a seq2seq model, got None.")
        checks.positive_int("start_token_id", start_token_id, allow_zero=True)
        adapter = _seq2seq_adapter(model, use_cache)
    elif names >= {"token_ids", "padding_mask"}:
        adapter = _gpt_adapter(model, use_cache)
    else:
        raise ValueError(
            f"`model` must be a gpt model (inputs token_ids, padding_mask) or a seq2seq model "
            f"(input encoder_token_ids), got inputs {sorted(names)}."
        )

    spec = tf.TensorSpec((None, None), tf.int32)

    @tf.function(jit_compile=jit_compile)
    def decode(ids, mask):
        # at trace time: how the cache is written; int8 kernels cast to float before the loop
        with compiled_cache_writes(jit_compile), int8_kernels_cast_once(model, sampler):
            if start_token_id is None:  # decoder-only: continue the prompt
                start, start_mask = ids, mask
            else:  # encoder-decoder: the decoder starts from one start token
                start = tf.fill((tf.shape(ids)[0], 1), tf.constant(start_token_id, tf.int32))
                start_mask = tf.ones_like(start)
            cache = adapter.init_cache(ids, mask, max_length)
            return _decode(adapter, sampler, cache, start, start_mask, max_length, stop_token_ids)

    @tf.function(input_signature=[spec, spec])
    def generate_fn(ids, mask):
        if start_token_id is None:  # checked outside XLA, which drops assertions
            tf.debugging.assert_less(
                tf.shape(ids)[1], max_length, message="the prompt must be shorter than max_length"
            )
        return decode(ids, mask)

    return generate_fn


def int8_kernels_cast_once(model: keras.Model, sampler):
    """While a decode loop is traced: ``model``'s int8 kernels cast to their layers' compute
    dtype once, where this is entered (before the loop), instead of at every step.

    Keras' int8 layers (``quantize="int8"``: weight-only) cast the int8 kernel inside every call
    (``matmul(x, kernel)``, then the output divided by the per-channel scale); in a loop that TF's
    executor runs, that is every kernel cast again for every new token. Inside this scope each
    such kernel reads as the float tensor cast here (a ``keras.StatelessScope`` holding those
    values), so each step computes the same numbers (an int8 to float cast is exact) without the
    casts. A scope also drops variable updates: with a sampler that draws from a
    ``keras.random.SeedGenerator`` (it advances a variable at every draw), or a model without int8
    kernels, nothing changes; any other update raises rather than being lost.
    """
    kernels = {id(v): (v, layer.compute_dtype) for layer in private_apis.sublayers(model)
               if getattr(layer, "quantization_mode", None) == "int8" for v in layer.weights if v.dtype == "int8"}
    if not kernels or any(isinstance(v, keras.random.SeedGenerator) for v in vars(sampler).values()):
        return contextlib.nullcontext()
    return _ReadAs({key: tf.cast(v, dtype) for key, (v, dtype) in kernels.items()})


class _ReadAs(keras.StatelessScope):
    """A ``keras.StatelessScope`` in which the variables of ``values`` (``{id(variable): tensor}``)
    read as those tensors, of any dtype (the base class casts each to its variable's dtype)."""

    def __init__(self, values):
        super().__init__(initialize_variables=False)
        self.state_mapping = dict(values)

    def add_update(self, update):
        variable, _ = update
        raise RuntimeError(f"Decoding assigned the variable {variable.path!r} while int8 kernels were read as "
                           "float (int8_kernels_cast_once): the update would be lost.")


def make_bucketed_decode(model: keras.Model, *, max_length: int, sampler="greedy", stop_token_ids=None):
    """The XLA-compiled GPT decode loop of an export: any prompt width, ``steps`` new tokens.

    For ``export_saved_model(..., jit_compile=True)``: XLA compiles once per input shape, so a
    signature pads prompts to multiples of ``PROMPT_BUCKET`` and rows to a few bucket sizes,
    and the loop writes into a buffer long enough for every such prompt plus the tokens asked
    for (``max_length + PROMPT_BUCKET - 1``), stopping after ``steps`` tokens. The number of
    new tokens is a tensor, so it does not add compilations.

    Args:
        model: a ``gpt`` model.
        max_length: int, the longest prompt plus new tokens a request may ask for.
        sampler, stop_token_ids: as in ``make_generate_fn``.

    Returns:
        A ``tf.function`` ``(ids, mask, steps) -> {"token_ids", "padding_mask"}``: ``ids`` and
        ``mask`` int32 ``(batch, P)`` (a left-padded prompt, ``P`` a multiple of
        ``PROMPT_BUCKET`` below ``max_length + PROMPT_BUCKET``), ``steps`` an int32 scalar with
        ``P + steps <= max_length + PROMPT_BUCKET - 1``; outputs ``(batch, buffer)`` whose
        columns ``[P, P + steps)`` hold the new tokens.
    """
    checks.positive_int("max_length", max_length)
    sampler = get_sampler(sampler)
    stop_token_ids = None if stop_token_ids is None else tuple(int(t) for t in stop_token_ids)
    adapter = _gpt_adapter(model, True)
    buffer = max_length + PROMPT_BUCKET - 1

    @tf.function(jit_compile=True)
    def decode(ids, mask, steps):
        with compiled_cache_writes(True), int8_kernels_cast_once(model, sampler):
            cache = adapter.init_cache(ids, mask, buffer)
            return _decode(adapter, sampler, cache, ids, mask, buffer, stop_token_ids, steps=steps)

    return decode


def generate(model, prompt_ids, max_new_tokens: int, *, prompt_mask=None, sampler="greedy",
             stop_token_ids=None, start_token_id=None):
    """Generate ``max_new_tokens`` after each prompt (eager convenience over ``make_generate_fn``).

    Args:
        model: a ``gpt`` or ``seq2seq`` model.
        prompt_ids: int array ``(batch, prompt_len)``, left-padded (see ``left_pad``), or a list
            of token-id lists of any lengths. For seq2seq, the source sentences.
        max_new_tokens: int, tokens to generate per row.
        prompt_mask: optional ``(batch, prompt_len)``, 1 for real tokens; default
            ``prompt_ids != 0`` for arrays.
        sampler, stop_token_ids, start_token_id: as in ``make_generate_fn``.

    Returns:
        A dict of numpy arrays ``token_ids`` and ``padding_mask``, ``(batch, prompt_len +
        max_new_tokens)`` for GPT and ``(batch, 1 + max_new_tokens)`` for seq2seq.

    Example:
        >>> out = generate(model, [[5, 6, 7], [8]], max_new_tokens=16, sampler="top_k")
    """
    checks.positive_int("max_new_tokens", max_new_tokens)
    if isinstance(prompt_ids, (list, tuple)) and prompt_ids and isinstance(prompt_ids[0], (list, tuple)):
        prompt_ids, prompt_mask = left_pad(prompt_ids)
    prompt_ids = np.asarray(prompt_ids, dtype="int32")
    if prompt_ids.ndim != 2:
        raise ValueError(f"`prompt_ids` must have shape (batch, prompt_len), got {prompt_ids.shape}.")
    prompt_mask = (prompt_ids != 0) if prompt_mask is None else np.asarray(prompt_mask)
    # Bucketed lengths: an XLA compilation serves every prompt length up to the bucket. The
    # padding changes no output (positions come from the mask); a GPT prompt is padded on
    # the left, next to the tokens it continues, and the padding is cut off again below.
    extra = -prompt_ids.shape[1] % PROMPT_BUCKET
    pad = ((0, 0), (extra, 0)) if start_token_id is None else ((0, 0), (0, extra))
    prompt_ids, prompt_mask = np.pad(prompt_ids, pad), np.pad(prompt_mask, pad)
    prefix = 1 if start_token_id is not None else prompt_ids.shape[1]
    key = (prefix + max_new_tokens, sampler, None if stop_token_ids is None else tuple(stop_token_ids), start_token_id)
    functions = _FUNCTIONS.setdefault(model, {})
    if key not in functions:
        functions[key] = make_generate_fn(
            model, max_length=key[0], sampler=sampler, stop_token_ids=stop_token_ids, start_token_id=start_token_id
        )
    out = functions[key](tf.constant(prompt_ids), tf.constant(prompt_mask.astype("int32")))
    cut = extra if start_token_id is None else 0
    return {k: v.numpy()[:, cut:] for k, v in out.items()}


def left_pad(sequences, pad_id: int = 0):
    """Left-pad token-id lists into ``(ids, mask)`` int32 arrays of shape (batch, longest).

    Example:
        >>> left_pad([[5, 6, 7], [8]])
        (array([[5, 6, 7], [0, 0, 8]]), array([[1, 1, 1], [0, 0, 1]]))
    """
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype="int32")
    mask = np.zeros((len(sequences), longest), dtype="int32")
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, longest - len(seq):] = seq
            mask[row, longest - len(seq):] = 1
    return ids, mask


def cache_bytes_per_row(model: keras.Model, *, input_length: int, max_length: int) -> int:
    """Bytes of the decode cache that one row of ``make_generate_fn(model, max_length=...)`` holds.

    Measured by building the cache for one row (every block's keys and values, and for
    seq2seq and T5 the encoder's projected context of ``input_length`` source tokens), so it
    follows the model's own layers, dtypes and sizes. The cache is linear in the rows.

    Args:
        model: a ``gpt``, ``seq2seq`` or ``t5`` model.
        input_length: int, the prompt (GPT) or source (seq2seq) tokens of the row.
        max_length: int, the decode length the cache holds.

    Example:
        >>> cache_bytes_per_row(bigkeras.build("gpt_tiny"), input_length=1, max_length=32)
    """
    checks.positive_int("input_length", input_length)
    checks.positive_int("max_length", max_length)
    names = {t.name for t in model.inputs}
    adapter = _seq2seq_adapter(model, True) if "encoder_token_ids" in names else _gpt_adapter(model, True)
    ids = tf.zeros((1, input_length), tf.int32)
    cache = adapter.init_cache(ids, tf.ones_like(ids), max_length)
    return int(sum(np.prod(t.shape) * t.dtype.size for t in tf.nest.flatten(cache)))


# One traced function per (model, settings); weak keys so models are not kept alive.
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _decode(adapter, sampler, cache, start, start_mask, max_length, stop_token_ids, steps=None):
    """Run ``sampler``'s while loop from ``start`` (batch, P) to (batch, max_length), or for ``steps`` tokens."""
    prefix = tf.shape(start)[1]
    sequence = tf.pad(start, [[0, 0], [0, max_length - prefix]])  # (batch, max_length)
    # The sampler never overwrites positions where `keep` is true: the prompt.
    keep = tf.sequence_mask(tf.fill(tf.shape(start)[:1], prefix), max_length)

    def next_logits(sequence, cache, index):
        # Logits for position `index` come from the token at `index - 1`.
        logits, cache = adapter.step(sequence, index - 1, cache)
        if stop_token_ids is not None:
            # A finished row emits padding (id 0) with probability 1, so a finished beam
            # keeps its score instead of being judged on what it would say after stopping.
            # Generated so far: positions [prefix, index); 1-D, as beams widen the batch.
            written = tf.logical_and(tf.range(max_length) >= prefix, tf.range(max_length) < index)
            stopped = tf.reduce_any(tf.logical_and(written[None], _is_stop(sequence, stop_token_ids)), axis=1)
            padding = tf.where(tf.range(tf.shape(logits)[-1]) == 0, 0.0, -1e9)
            logits = tf.where(stopped[:, None], padding[None], logits)
        return logits, None, cache

    with _at_most(sampler, steps):
        sequence = sampler(
            next=next_logits, prompt=sequence, cache=cache, index=prefix, mask=keep,
            stop_token_ids=stop_token_ids,
        )
    sequence = tf.cast(sequence, tf.int32)
    generated = tf.logical_not(keep)
    valid = tf.concat([tf.cast(start_mask, tf.bool), generated[:, prefix:]], axis=1)
    if stop_token_ids is not None:
        is_stop = tf.logical_and(generated, _is_stop(sequence, stop_token_ids))
        # Positions after the first generated stop token are not part of the output.
        after_stop = tf.cumsum(tf.cast(is_stop, tf.int32), axis=1, exclusive=True) > 0
        valid = tf.logical_and(valid, tf.logical_not(after_stop))
    return {"token_ids": tf.where(valid, sequence, 0), "padding_mask": valid}


@contextlib.contextmanager
def _at_most(sampler, steps):
    """While tracing, cap the iterations of ``sampler``'s while loop at ``steps`` (a tensor; None: no cap).

    keras-hub samplers loop until the end of the sequence buffer; every sampler runs its loop
    through ``Sampler.run_loop``, which this shadows on the instance.
    """
    if steps is None:
        yield
        return
    run_loop = sampler.run_loop

    def capped(cond, body, model=None, loop_vars=None, maximum_iterations=None):
        limit = steps if maximum_iterations is None else tf.minimum(maximum_iterations, steps)
        return run_loop(cond, body, model=model, loop_vars=loop_vars, maximum_iterations=limit)

    sampler.run_loop = capped
    try:
        yield
    finally:
        del sampler.run_loop


def _is_stop(sequence, stop_token_ids):
    """Bool (batch, length): where ``sequence`` holds one of ``stop_token_ids``."""
    return tf.reduce_any(sequence[..., None] == tf.constant(stop_token_ids, sequence.dtype), axis=-1)


class _FullGPT:
    """The naive reference: the whole functional model on the whole sequence every step."""

    def __init__(self, model):
        self.model = model

    def init_cache(self, prompt_ids, prompt_mask, max_length):
        pad = max_length - tf.shape(prompt_mask)[1]
        return {"mask": tf.pad(tf.cast(prompt_mask, tf.int32), [[0, 0], [0, pad]], constant_values=1)}

    def step(self, sequence, index, cache):
        logits = self.model({"token_ids": sequence, "padding_mask": cache["mask"]}, training=False)
        return tf.gather(logits, index, axis=1), cache  # causal: later positions do not matter


class _FullSeq2Seq:
    """The naive reference for seq2seq: encoder and decoder on everything every step."""

    def __init__(self, model):
        self.model = model

    def init_cache(self, encoder_ids, encoder_mask, max_length):
        return {"encoder_token_ids": encoder_ids, "encoder_padding_mask": encoder_mask}

    def step(self, sequence, index, cache):
        inputs = {**cache, "decoder_token_ids": sequence, "decoder_padding_mask": tf.ones_like(sequence)}
        logits = self.model(inputs, training=False)
        return tf.gather(logits, index, axis=1), cache


def _gpt_adapter(model, use_cache):
    from bigkeras.models.gpt import CachedGPT

    return CachedGPT(model) if use_cache else _FullGPT(model)


def _seq2seq_adapter(model, use_cache):
    from bigkeras.models.seq2seq import CachedSeq2Seq
    from bigkeras.models.t5 import T5, CachedT5

    if not use_cache:
        return _FullSeq2Seq(model)
    return CachedT5(model) if isinstance(model, T5) else CachedSeq2Seq(model)
