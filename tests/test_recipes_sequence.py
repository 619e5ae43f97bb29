"""The sequence-model recipes end to end with ``--smoke``, and the serving pieces they rely on.

Each recipe runs as users run it, in a subprocess (two at a time), into temporary run and
export directories: it must train, score the held-out split, write ``results.json`` and
``samples.json``, and export a SavedModel that ``verify`` accepts (the recipe raises
otherwise). The test then loads each export itself and calls its text-in, text-out
signature (``generate``, ``translate`` or the review classifier) on new strings.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import passed_smoke_run, run_recipes_smoke

RECIPES = {  # name -> (metric, signature, its input, the sample keys)
    "bible_gpt": ("test_bits_per_byte", "generate", "prompt", {"prompt", "completion"}),
    "bible_bert": ("test_accuracy", "serving_default", "text", {"example", "label", "predicted"}),
    "dates_seq2seq": ("test_exact_match", "translate", "source", {"source", "target", "prediction", "correct"}),
    "de_en_seq2seq": ("test_bleu", "translate", "source", {"source", "reference", "translation"}),
    "dates_t5": ("test_exact_match", "translate", "source", {"source", "target", "prediction", "correct"}),
    "de_en_t5": ("test_bleu", "translate", "source", {"source", "reference", "translation"}),
}
VIA_CLI = "dates_seq2seq"  # runs as `bigkeras train NAME`, the others as `python recipes/NAME.py`
RESULT_KEYS = {"recipe", "data", "metric", "value", "wall_seconds", "command", "export", "details"}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, bible_prepared):
    """Run every sequence recipe with --smoke: ``{name: (CompletedProcess, run_dir)}``, export dir.

    bible_gpt trains from the Beam-prepared Bible (``--data tfrecords:``, issue 25's end-to-end
    check; test_data_beam.py shows those windows and that BPE equal the recipe's own preparation),
    so the suite trains it once, not twice.
    """
    flags = {"bible_gpt": ["--data", f"tfrecords:{bible_prepared[2]}"]}
    return run_recipes_smoke(tmp_path_factory.mktemp("sequence_recipes"), RECIPES, via_cli=VIA_CLI, extra_flags=flags,
                             timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_sequence_recipe_smoke_run_records_exports_and_serves_text(smoke_runs, name):
    import tensorflow_text  # noqa: F401  (WordPiece ops in the BERT and de-en graphs)

    from bigkeras.serving import read_model_config

    run_dir, results, export_dir = passed_smoke_run(smoke_runs, name)
    metric, signature, input_name, sample_keys = RECIPES[name]
    assert set(results) == RESULT_KEYS and results["recipe"] == name and results["metric"] == metric
    low, high = (0.0, 16.0) if metric == "test_bits_per_byte" else (0.0, 1.0)
    assert low <= results["value"] <= high and results["wall_seconds"] > 0
    assert "--smoke" in results["command"]
    for artifact in ("config.json", "history.csv", "curves.png", "last.keras"):
        assert (run_dir / artifact).is_file(), artifact
    samples = json.loads((run_dir / "samples.json").read_text())
    assert samples and all(set(row) == sample_keys for row in samples)

    export = Path(results["export"])
    assert export == export_dir / name / "1"
    served = tf.saved_model.load(str(export)).signatures[signature]
    texts = ["4. März 1998", "Der Hund schläft."] if input_name == "source" else ["And God said", "a fine film"]
    inputs = {input_name: tf.constant(texts)}
    if signature == "generate":
        inputs["max_new_tokens"] = tf.constant(5)
    outputs = served(**inputs)
    text_out = {"generate": "completion", "translate": "translation", "serving_default": "class_name"}[signature]
    assert outputs[text_out].dtype == tf.string and outputs[text_out].shape == (2,)
    assert name in {c.name for c in read_model_config(export_dir / "models.config").model_config_list.config}


@pytest.mark.slow
def test_recipe_scores_are_what_the_export_serves(smoke_runs):
    """The dates score and the GPT samples come from the exported signatures: they must say the same."""
    import tensorflow_text  # noqa: F401  (the GPT export's BPE split ops)

    runs, _ = smoke_runs
    run_dir = runs["dates_seq2seq"][1]
    results = json.loads((run_dir / "results.json").read_text())
    samples = json.loads((run_dir / "samples.json").read_text())
    translate = tf.saved_model.load(results["export"]).signatures["translate"]
    got = translate(source=tf.constant([s["source"] for s in samples]))["translation"].numpy().astype(str)
    assert list(got) == [s["prediction"] for s in samples]
    assert [s["correct"] for s in samples] == [s["prediction"] == s["target"] for s in samples]

    gpt_run = runs["bible_gpt"][1]
    gpt = json.loads((gpt_run / "results.json").read_text())
    assert gpt["data"] == "prepared", gpt["data"]  # the Beam shards: the compressors need raw text, which they lack
    assert {"validation_bits_per_byte", "test_bits_per_byte", "vocabulary_size", "parameters",
            "bytes_per_token"} == set(gpt["details"])
    assert gpt["details"]["vocabulary_size"] == 512 and gpt["details"]["bytes_per_token"] > 1.5  # the shards' BPE
    generate = tf.saved_model.load(gpt["export"]).signatures["generate"]
    gpt_samples = json.loads((gpt_run / "samples.json").read_text())
    served = generate(prompt=tf.constant([s["prompt"] for s in gpt_samples]), max_new_tokens=tf.constant(96))
    got = [c.decode("utf-8", "replace") for c in served["completion"].numpy()]
    assert got == [s["completion"] for s in gpt_samples]  # seeded top-p: the same completion per prompt
    bert_pretraining = runs["bible_bert"][1] / "pretraining"
    assert (bert_pretraining / "history.csv").is_file()


# ----------------------------------------------------------------------------- serving pieces


def byte_tokenizer():
    import keras_hub

    return keras_hub.tokenizers.ByteTokenizer(lowercase=False)


def test_teacher_forcing_examples_shift_truncate_and_mask():
    from bigkeras.serving.seq2seq import teacher_forcing_examples

    features, labels, weights = teacher_forcing_examples(
        byte_tokenizer(), ["ab", "abcdef"], ["xyz", "q"], source_length=4, target_length=3,
        start_token_id=2, end_token_id=3,
    )
    a, b, c, x, y, q = (ord(ch) for ch in "abcxyq")
    np.testing.assert_array_equal(features["encoder_token_ids"], [[a, b, 0, 0], [a, b, c, ord("d")]])
    np.testing.assert_array_equal(features["encoder_padding_mask"], [[1, 1, 0, 0], [1, 1, 1, 1]])
    # "xyz" is cut to two tokens so that the end token fits in three positions.
    np.testing.assert_array_equal(features["decoder_token_ids"], [[2, x, y], [2, q, 0]])
    np.testing.assert_array_equal(labels, [[x, y, 3], [q, 3, 0]])
    np.testing.assert_array_equal(weights, [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(features["decoder_padding_mask"], weights)
    with pytest.raises(ValueError, match="`sources` and `targets` must align"):
        teacher_forcing_examples(byte_tokenizer(), ["a"], [], source_length=4, target_length=3,
                                 start_token_id=2, end_token_id=3)


def test_translate_signature_decodes_like_generate():
    import bigkeras
    from bigkeras.generation import generate
    from bigkeras.serving.seq2seq import translate_signatures

    model = bigkeras.build("seq2seq_tiny", vocab_size=256)
    sources = ["4 mars 1998", "12. Mai 2001"]
    sigs = translate_signatures(model, byte_tokenizer(), source_length=8, target_length=6,
                                start_token_id=2, end_token_id=3, examples=sources)
    out = sigs["translate"](source=tf.constant(sources))
    assert out["translation"].dtype == tf.string and tuple(out["translation_ids"].shape) == (2, 6)

    ids = [list(s.encode())[:8] for s in sources]  # what the graph tokenizes, cut to 8
    width = max(map(len, ids))
    padded = np.array([i + [0] * (width - len(i)) for i in ids])
    want = generate(model, padded, 6, prompt_mask=padded != 0, stop_token_ids=[3], start_token_id=2)
    want_ids = np.where(np.isin(want["token_ids"][:, 1:], [0, 2, 3]), 0, want["token_ids"][:, 1:])
    np.testing.assert_array_equal(out["translation_ids"].numpy(), want_ids)
    decoded = [bytes(int(t) for t in row if t).decode("utf-8", "replace") for row in want_ids]
    assert out["translation"].numpy().astype(str).tolist() == decoded


def test_translate_texts_runs_the_signature_in_batches_and_decodes_utf8():
    from bigkeras.serving.seq2seq import translate_texts

    calls = []

    def upper(source):  # stands in for a translate signature
        calls.append(len(source))
        return {"translation": tf.strings.upper(source, encoding="utf-8")}

    out = translate_texts(upper, ["schön", "a", "b", "c", "d"], batch_size=2)
    assert out.tolist() == ["SCHÖN", "A", "B", "C", "D"] and calls == [3, 2]
    with pytest.raises(ValueError, match="batch_size"):
        translate_texts(upper, ["a"], batch_size=0)


def test_preprocessed_text_signature_runs_the_preprocessor_in_graph():
    import keras_hub

    import bigkeras
    from bigkeras.serving.signatures import preprocessed_text_signatures

    vocabulary = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "a", "fine", "film", "dull"]
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True), sequence_length=8)
    model = bigkeras.build("bert_tiny", vocab_size=len(vocabulary))
    sigs = preprocessed_text_signatures(model, preprocessor, class_names=["rotten", "fresh"],
                                        examples=["a fine film", "dull"])
    out = sigs["serving_default"](text=tf.constant(["a fine film", "A DULL film"]))
    want = model(preprocessor(tf.constant(["a fine film", "a dull film"])), training=False)
    np.testing.assert_allclose(out["logits"].numpy(), want.numpy(), atol=1e-5)
    assert out["class_name"].numpy().astype(str).tolist() == [
        ["rotten", "fresh"][i] for i in np.argmax(want.numpy(), -1)]
    with pytest.raises(ValueError, match="`class_names` must name all 2 classes"):
        preprocessed_text_signatures(model, preprocessor, class_names=["only one"])
