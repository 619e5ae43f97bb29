"""T5: parameter counts against keras-hub and transformers, Hugging Face checkpoints both ways,
relative position buckets, cached decoding against full recomputation."""

import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

import bigkeras
from bigkeras import checkpoints
from bigkeras.generation import generate, make_generate_fn
from bigkeras.layers.t5 import relative_position_bucket
from bigkeras.models.t5 import PRESETS, T5, CachedT5, t5

torch = pytest.importorskip("torch")  # the reference implementation: test-only dependencies
transformers = pytest.importorskip("transformers")

# Tiny Hugging Face configurations: T5 1.0 (ReLU, tied, rescaled) and T5 1.1 (gated GELU,
# untied). 8 buckets up to distance 16 put short sequences in the logarithmic buckets too.
TINY_HF = {"vocab_size": 48, "d_model": 32, "d_kv": 8, "num_heads": 3, "d_ff": 40, "num_layers": 2,
           "num_decoder_layers": 3, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16}
HF_VARIANTS = {
    "t5": {**TINY_HF, "feed_forward_proj": "relu"},
    "t5_1_1": {**TINY_HF, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
}


def _hf_inputs():
    rng = np.random.default_rng(0)
    enc = rng.integers(2, 48, size=(3, 11)).astype("int64")
    enc_mask = np.ones_like(enc)
    enc_mask[1, 7:], enc_mask[2, 4:] = 0, 0  # right-padded rows
    enc = enc * enc_mask
    dec = rng.integers(2, 48, size=(3, 21)).astype("int64")
    dec[:, 0] = 0  # T5 starts the decoder with the padding id
    return enc, enc_mask, dec


def _bigkeras_inputs(enc, enc_mask, dec):
    return {"encoder_token_ids": enc.astype("int32"), "encoder_padding_mask": enc_mask.astype("int32"),
            "decoder_token_ids": dec.astype("int32"), "decoder_padding_mask": np.ones_like(dec, "int32")}


def _hf_logits(model, enc, enc_mask, dec):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask),
                    decoder_input_ids=torch.tensor(dec))
    return out.logits.numpy(), out.encoder_last_hidden_state.numpy()


def _encoder_outputs(model, enc, enc_mask):
    inputs = {t.name: t for t in model.inputs}
    encoder = keras.Model([inputs["encoder_token_ids"], inputs["encoder_padding_mask"]], model.encoder_norm.output)
    return np.asarray(encoder([enc.astype("int32"), enc_mask.astype("int32")]))


@pytest.fixture(scope="module", params=list(HF_VARIANTS))
def hf_checkpoint(request, tmp_path_factory):
    """A random Hugging Face T5 directory as the Hub has them, and the model transformers reads from it.

    transformers 5 ties T5's head at construction; a T5 1.1 directory gets its own random
    ``lm_head.weight`` and ``tie_word_embeddings: false``, as google/t5-v1_1-* ship.
    """
    torch.manual_seed(0)
    config = transformers.T5Config.from_dict(HF_VARIANTS[request.param])
    directory = tmp_path_factory.mktemp(request.param)
    transformers.T5ForConditionalGeneration(config).save_pretrained(directory)
    if request.param == "t5_1_1":
        tensors = load_file(directory / "model.safetensors")
        tensors["lm_head.weight"] = torch.randn(48, 32).numpy()
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
        written = json.loads((directory / "config.json").read_text())
        written.pop("scale_decoder_outputs")
        (directory / "config.json").write_text(json.dumps({**written, "tie_word_embeddings": False}))
    reference = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    return request.param, directory, reference


def test_relative_position_buckets_equal_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-300, 301)[None, :] - np.arange(0, 40)[:, None]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 16)):
            ours = relative_position_bucket(relative, bidirectional=bidirectional, num_buckets=buckets,
                                            max_distance=distance)
            theirs = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional, buckets, distance)
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), theirs.numpy())


@pytest.mark.slow  # builds 60-77M parameter models (about 4 s each)
@pytest.mark.parametrize("preset, hf, expected", [
    ("t5_small", {}, 60_506_624),
    ("t5_1_1_small", {"d_ff": 1024, "num_layers": 8, "num_heads": 6, "feed_forward_proj": "gated-gelu",
                      "tie_word_embeddings": False}, 76_961_152),
])
def test_parameter_counts_equal_transformers(preset, hf, expected):
    ours = bigkeras.build(preset)
    config = transformers.T5Config.from_dict(hf)
    with torch.device("meta"):
        reference = transformers.T5ForConditionalGeneration(config)
    if not ours.arguments["tie_embeddings"]:
        # transformers 5 ties at construction and unties when a checkpoint's lm_head differs
        # (every T5 1.1 checkpoint): count the untied model that from_pretrained returns.
        reference.lm_head.weight = torch.nn.Parameter(torch.empty_like(reference.lm_head.weight))
    assert ours.count_params() == reference.num_parameters() == expected


@pytest.mark.parametrize("gated", [False, True])
def test_parameter_counts_equal_keras_hubs_t5_backbone(gated):
    """keras-hub's T5Backbone of the same structure, relu with a tied head (T5) or gated GELU with
    an untied one (T5 1.1), at the tiny preset's sizes (the published sizes: against transformers)."""
    import keras_hub

    a = {**PRESETS["tiny"], "use_gated_activation": gated, "tie_embeddings": not gated,
         "activation": "gelu" if gated else "relu"}
    theirs = keras_hub.models.T5Backbone(
        vocabulary_size=a["vocab_size"], num_layers=a["num_encoder_layers"], num_heads=a["num_heads"],
        hidden_dim=a["hidden_dim"], intermediate_dim=a["intermediate_dim"], key_value_dim=a["key_value_dim"],
        activation=a["activation"], use_gated_activation=gated, tie_embedding_weights=not gated,
    )  # its ReversibleEmbedding holds the untied head
    assert t5(**a).count_params() == theirs.count_params()


def test_tiny_preset_exposes_its_parts():
    # tests/test_registry.py runs the shared builder checks (fit, .keras, config) on t5_tiny.
    model = bigkeras.build("t5_tiny")
    assert isinstance(model, T5) and len(model.encoder_blocks) == 2
    assert model.decoder_blocks[0].position_bias is model.decoder_position_bias
    assert model.decoder_blocks[1].position_bias is None  # shared, not repeated
    assert model.get_config()["key_value_dim"] == 16
    gated = t5(**{**PRESETS["tiny"], "use_gated_activation": True, "tie_embeddings": False,
                  "activation": "gelu_approximate"})
    extra = PRESETS["tiny"]["vocab_size"] * 32 + 4 * 32 * 64  # the head, one gate per block
    assert gated.count_params() - model.count_params() == extra
    # LoRA roles: 6 attention layers (2 encoder, 2 decoder self, 2 cross), 4 blocks x 2 FFN kernels.
    model.enable_lora(2, targets=("query", "value", "ffn"))
    assert len(model.lora_layers) == 6 + 6 + 8 and len(model.adapter_weights()) == 40


def test_hugging_face_t5_loads_with_equal_outputs_and_greedy_tokens(hf_checkpoint):
    name, directory, reference = hf_checkpoint
    model = checkpoints.load_model(directory)
    assert isinstance(model, T5)
    assert model.arguments["tie_embeddings"] == (name == "t5")
    enc, enc_mask, dec = _hf_inputs()
    hf_logits, hf_encoded = _hf_logits(reference, enc, enc_mask, dec)
    logits = np.asarray(model(_bigkeras_inputs(enc, enc_mask, dec)))
    np.testing.assert_allclose(logits, hf_logits, atol=1e-4, rtol=1e-4)
    encoded = _encoder_outputs(model, enc, enc_mask)
    real = enc_mask.astype(bool)
    np.testing.assert_allclose(encoded[real], hf_encoded[real], atol=1e-4, rtol=1e-4)

    if name == "t5":
        return  # greedy decoding of the random T5 1.0 repeats one token: checked on T5 1.1 only
    # Greedy decoding: the same tokens as transformers' generate from start id 0 (its own
    # cache assumes as many decoder layers as encoder layers, so it recomputes here).
    with torch.no_grad():
        hf_tokens = reference.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc_mask),
                                       do_sample=False, max_new_tokens=12, min_new_tokens=12,
                                       decoder_start_token_id=0, eos_token_id=None, use_cache=False).numpy()
    decode = make_generate_fn(model, max_length=13, start_token_id=0, jit_compile=False)  # XLA compiles slowly
    tokens = decode(enc.astype("int32"), enc_mask.astype("int32"))["token_ids"].numpy()
    np.testing.assert_array_equal(tokens, hf_tokens)
    assert len(np.unique(tokens)) > 5, tokens


def test_save_hf_round_trip_is_exact_and_transformers_reads_it(hf_checkpoint, tmp_path):
    name, directory, reference = hf_checkpoint
    model = checkpoints.load_model(directory)
    out = checkpoints.save_hf(model, tmp_path / "out")
    original, written = load_file(directory / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(written) <= set(original)
    for key, value in written.items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)
    again = checkpoints.load_model(out)
    for a, b in zip(model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    enc, enc_mask, dec = _hf_inputs()
    np.testing.assert_array_equal(_hf_logits(reloaded, enc, enc_mask, dec)[0],
                                  _hf_logits(reference, enc, enc_mask, dec)[0])


@pytest.mark.parametrize("variant", ["t5", "t5_1_1"])
def test_bigkeras_t5_saved_with_save_hf_runs_in_transformers_with_equal_logits(tmp_path, variant):
    gated = variant == "t5_1_1"
    model = t5(**{**PRESETS["tiny"], "num_decoder_layers": 3, "key_value_dim": 8, "num_heads": 3,
                  "num_buckets": 8, "max_distance": 16, "use_gated_activation": gated, "tie_embeddings": not gated,
                  "activation": "gelu_approximate" if gated else "relu"})
    reference = transformers.T5ForConditionalGeneration.from_pretrained(checkpoints.save_hf(model, tmp_path)).eval()
    assert reference.config.feed_forward_proj == ("gated-gelu" if gated else "relu")
    enc, enc_mask, dec = _hf_inputs()
    np.testing.assert_allclose(_hf_logits(reference, enc, enc_mask, dec)[0],
                               np.asarray(model(_bigkeras_inputs(enc, enc_mask, dec))), atol=1e-4, rtol=1e-4)


def test_transformers_5_tied_unscaled_head_loads_as_a_copy(tmp_path):
    # transformers 5 saves a gated-GELU model with its head tied and not rescaled.
    torch.manual_seed(1)
    config = transformers.T5Config.from_dict(HF_VARIANTS["t5_1_1"])
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    reference = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    model = checkpoints.load_model(tmp_path)
    assert not model.arguments["tie_embeddings"]
    enc, enc_mask, dec = _hf_inputs()
    np.testing.assert_allclose(np.asarray(model(_bigkeras_inputs(enc, enc_mask, dec))),
                               _hf_logits(reference, enc, enc_mask, dec)[0], atol=1e-4, rtol=1e-4)


def test_bad_checkpoints_name_the_problem(hf_checkpoint, tmp_path):
    name, directory, _ = hf_checkpoint
    config = json.loads((directory / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "feed_forward_proj": "gated-swish"}))
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(checkpoints.CheckpointError, match="gated-swish"):
        checkpoints.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoints.CheckpointError, match="num_decoder_layers"):
        checkpoints.load_model(tmp_path, num_decoder_layers=2)
    tensors = load_file(directory / "model.safetensors")
    tensors["encoder.final_layer_norm.weight"] = np.ones(31, "float32")
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(checkpoints.CheckpointError, match=r"encoder\.final_layer_norm\.weight.*\(31,\)"):
        checkpoints.load_model(tmp_path)


def test_cached_decoding_equals_full_recomputation():
    # Random weights scaled up so the tokens vary; 8 buckets up to 16 exercise the log buckets.
    model = t5(**{**PRESETS["tiny"], "num_buckets": 8, "max_distance": 16, "use_gated_activation": True,
                  "activation": "gelu_approximate", "tie_embeddings": False})
    rng = np.random.default_rng(3)
    enc = rng.integers(2, 64, size=(3, 9)).astype("int32")
    mask = np.ones_like(enc)
    mask[0, 5:] = 0
    enc = enc * mask
    kwargs = {"max_length": 24, "start_token_id": 0, "jit_compile": False}
    cached = make_generate_fn(model, **kwargs)(enc, mask)["token_ids"].numpy()
    full = make_generate_fn(model, use_cache=False, **kwargs)(enc, mask)["token_ids"].numpy()
    np.testing.assert_array_equal(cached, full)
    assert len(np.unique(cached[:, 1:])) > 3, cached  # not one repeated token
    # keras-hub's samplers reorder the cache: one beam is greedy search; three beams run.
    def beam(n):
        return make_generate_fn(model, sampler=keras_hub.samplers.BeamSampler(num_beams=n), **kwargs)

    np.testing.assert_array_equal(beam(1)(enc, mask)["token_ids"].numpy(), cached)
    assert beam(3)(enc, mask)["token_ids"].shape == (3, 24)
    # Step logits equal the full model's logits at every position (teacher forcing).
    adapter = CachedT5(model)
    cache = adapter.init_cache(keras.ops.convert_to_tensor(enc), keras.ops.convert_to_tensor(mask), 24)
    full_logits = np.asarray(model(_bigkeras_inputs(enc, mask, cached)))
    for index in range(23):
        step_logits, cache = adapter.step(keras.ops.convert_to_tensor(cached), index, cache)
        np.testing.assert_allclose(np.asarray(step_logits), full_logits[:, index], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [({"num_decoder_layers": 0}, "num_decoder_layers"),
                                             ({"hidden_dim": 30, "num_heads": 4, "key_value_dim": None}, "divisible"),
                                             ({"dropout": 1.5}, "dropout")])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        t5(**{**PRESETS["tiny"], **kwargs})


SOURCES = ["normalize date: 4. März 1998", "normalize date: 12 May 2001", "normalize date: 1998-03-04",
           "normalize date: mercredi 4 mars 1998", "normalize date: May 12, 2001"]


@pytest.mark.slow  # exports and verifies in a fresh interpreter (about 20 s)
def test_translate_export_with_sentencepiece_in_the_graph_decodes_like_generate(tmp_path):
    from bigkeras.data import sentencepiece_tokenizer
    from bigkeras.serving import export_saved_model
    from bigkeras.serving.compatibility import RELEASE_NAMES, load_report
    from bigkeras.serving.seq2seq import translate_signatures

    tokenizer = sentencepiece_tokenizer(SOURCES * 20, vocabulary_size=64)
    assert [tokenizer.id_to_token(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]  # T5's ids
    model = t5(**{**PRESETS["tiny"], "vocab_size": tokenizer.vocabulary_size(), "tie_embeddings": False})
    head = model.token_embedding.reverse_embeddings  # (hidden, vocab), random N(0, 1)
    head.assign(keras.ops.convert_to_numpy(head).copy() * (np.arange(head.shape[1]) >= 2))  # never 0 or 1
    tokens = {"source_length": 16, "target_length": 8, "start_token_id": 0, "end_token_id": 1}
    signatures = translate_signatures(model, tokenizer, examples=SOURCES[:2], **tokens)
    out = signatures["translate"](source=tf.constant(SOURCES[2:]))
    ids = [list(row[:16]) for row in tokenizer(SOURCES[2:])]  # eager keras-hub tokenizers return lists
    width = max(map(len, ids))
    padded = np.array([row + [0] * (width - len(row)) for row in ids])
    want = generate(model, padded, 8, prompt_mask=padded != 0, start_token_id=0, stop_token_ids=[1])["token_ids"]
    want = np.where(np.isin(want[:, 1:], [0, 1]), 0, want[:, 1:])
    assert (want != 0).all(), want  # eight pieces per row: the detokenizer has something to join
    np.testing.assert_array_equal(out["translation_ids"].numpy(), want)
    pieces = tf.ragged.constant([[t for t in row if t] for row in want.tolist()], dtype=tf.int32)
    got = [t.decode("utf-8") for t in out["translation"].numpy()]  # UTF-8 (<unk> detokenizes to U+2047)
    assert got == [str(t) for t in np.asarray(tokenizer.detokenize(pieces)).tolist()]

    export = export_saved_model(model, "t5_translate", base_dir=tmp_path, signatures=signatures,
                                max_batch_size=8)  # verified first; its warmup decodes 1 to 8 rows
    report = load_report(export)
    assert "SentencepieceTokenizeOp" in report["ops"]["tf_text"]
    assert report["loads_on"] == list(RELEASE_NAMES)  # TF Serving 2.14 to 2.21 link the SentencePiece ops


def test_keras_hub_t5_backbone_preset_loads_with_equal_outputs(tmp_path):
    import keras_hub

    # Gated and tied: the gate and the rescaled tied head (the untied head is read as in HF's).
    theirs = keras_hub.models.T5Backbone(
        vocabulary_size=48, num_layers=2, num_heads=3, hidden_dim=32, intermediate_dim=40, key_value_dim=8,
        activation="gelu", use_gated_activation=True, tie_embedding_weights=True,
    )
    theirs.save_to_preset(str(tmp_path))
    model = checkpoints.load_model(tmp_path)
    assert isinstance(model, T5) and model.arguments["activation"] == "gelu"  # keras-hub's exact GELU, kept
    assert model.arguments["use_gated_activation"] and model.arguments["tie_embeddings"]
    assert model.count_params() == theirs.count_params()
    enc, enc_mask, dec = _hf_inputs()
    x = _bigkeras_inputs(enc, enc_mask, dec)
    out = theirs(x)
    # keras-hub's T5Seq2SeqLM head: the decoder output rescaled, then the tied embedding.
    want = (np.asarray(out["decoder_sequence_output"]) * 32**-0.5) @ np.asarray(theirs.token_embedding.embeddings).T
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=1e-4, rtol=1e-4)
    real = enc_mask.astype(bool)
    np.testing.assert_allclose(_encoder_outputs(model, enc, enc_mask)[real],
                               np.asarray(out["encoder_sequence_output"])[real], atol=1e-4, rtol=1e-4)


def test_sentencepiece_tokenizer_round_trips_through_hugging_face_files(tmp_path):
    from bigkeras.data import sentencepiece_tokenizer

    tokenizer = sentencepiece_tokenizer(SOURCES * 20, vocabulary_size=48)
    model = bigkeras.build("t5_tiny", vocab_size=tokenizer.vocabulary_size())
    out = checkpoints.save_hf(model, tmp_path, tokenizer=tokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    ours = checkpoints.load_tokenizer(out)
    texts = ["normalize date: 4. März 1998", "normalize date: 12 May 2001"]
    want = theirs(texts)["input_ids"]
    assert all(row[-1] == 1 for row in want)  # Hugging Face ends with </s>, and so do we
    assert [list(map(int, row)) for row in ours(texts)] == want
    assert np.asarray(ours.detokenize(ours(texts))).astype(str).tolist() == texts
