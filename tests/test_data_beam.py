"""Apache Beam data preparation (``bigkeras.data.beam``, ``bigkeras prepare``) and prepared data in recipes.

The end-to-end tests run Beam's DirectRunner with 2 worker processes
(``--direct_running_mode=multi_processing --direct_num_workers=2``) on the reviews and the
Bible corpora written out as raw files, and compare the shards with the recipes' own
in-process preparation, as sets of examples. The fast tests run the same functions in
process (``prepare_in_process``).
"""

import csv
import functools
import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bigkeras import bits, data
from bigkeras.data import beam
from bigkeras.data.base import DataFileError
from tests.cluster import PYTHON
from tests.helpers import ROOT, SMOKE_EXPORT_FLAGS, write_tsv

# Beam worker processes and recipe runs: one unit with the other process-starting tests (tests/conftest.py).
pytestmark = pytest.mark.processes
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}


def example_set(prefix, keys) -> set:
    """Every example of the shards at ``prefix`` as a hashable tuple of ``keys``."""
    ds = data.read_tfrecords(prefix)
    return {tuple(tuple(np.ravel(e[k]).tolist()) for k in keys) for e in ds.as_numpy_iterator()}


def array_set(*arrays) -> set:
    return {tuple(tuple(np.ravel(a[i]).tolist()) for a in arrays) for i in range(len(arrays[0]))}


class FakeTokenizer:
    """Characters to ids (``ord``), as keras-hub's eager tokenizers return: a list of lists."""

    def __call__(self, texts):
        return [[ord(c) % 97 + 1 for c in t] for t in texts]


# ----------------------------------------------------------------------------- fast, in process


def test_streamed_windows_equal_lm_windows_across_batches(monkeypatch):
    monkeypatch.setattr(beam, "BATCH", 3)  # several tokenizer batches per document
    config = beam.PrepareConfig(output="/tmp/x", splits={"train": ["x"]}, task="gpt", tokenizer=FakeTokenizer,
                                sequence_length=8)
    examples = beam.Examples(config, beam.Plan(tokenizer=FakeTokenizer))
    examples.setup()
    lines = ["In the beginning", "", "God created", "the heaven and the earth.", "x" * 30, "y"]
    records = ((i, {"text": t}) for i, t in enumerate(lines))
    got = [e for _, e in examples(beam.Unit("train", "x"), records, beam.Report("t", strict=True))]
    ids = FakeTokenizer()(["\n".join(lines)])[0]
    inputs, targets, weights = bits.lm_windows(ids, 8)
    assert len(got) == len(inputs)
    for row, x, y, w in zip(got, inputs, targets, weights):
        np.testing.assert_array_equal(row["token_ids"], x)
        np.testing.assert_array_equal(row["targets"], y)
        np.testing.assert_array_equal(row["weights"], w)


def test_text_lines_in_process_skip_bad_input_with_a_metric_and_a_log_line(tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_bytes(b"first line\nsecond \xff\xfe line\n\nthird line\n")
    (raw / "b.txt.gz").write_bytes(b"this is not gzip at all")  # unreadable: a corrupt archive
    with gzip.open(raw / "c.txt.gz", "wt") as f:
        f.write("compressed line\n")
    config = beam.PrepareConfig(output=str(tmp_path / "out"), num_shards=2,
                                splits={"train": [str(raw / "*.txt*")], "test": [str(raw / "missing-*.txt")]})
    with caplog.at_level(logging.WARNING, logger="bigkeras.prepare"):
        manifest = beam.prepare_in_process(config)
    metrics = manifest["metrics"]
    assert metrics["prepare/bad_input/bad_lines"] == 1
    assert metrics["prepare/bad_input/unreadable_files"] == 1
    assert metrics["prepare/bad_input/missing_paths"] == 1
    assert metrics["prepare/blank_lines"] == 1
    logged = caplog.text
    assert f"{raw / 'a.txt'}:2 is not UTF-8" in logged and str(raw / "b.txt.gz") in logged
    assert "missing-*.txt" in logged
    prepared = data.load_prepared(tmp_path / "out")
    assert sorted(prepared.train.arrays()["text"]) == ["compressed line", "first line", "third line"]
    assert len(prepared.test) == 0 and prepared.manifest["roles"] == {"x": "text", "y": None}


def test_strict_stops_naming_the_file_and_leaves_no_finished_dataset(tmp_path):
    raw = tmp_path / "a.txt"
    raw.write_bytes(b"good\nbad \xff\n")
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(raw)]}, strict=True)
    with pytest.raises(beam.BadInputError, match=r"a\.txt:2 is not UTF-8.*--strict"):
        beam.prepare_in_process(config)
    assert not (tmp_path / "out" / "dataset.json").exists()
    with pytest.raises(DataFileError, match="not a finished prepared dataset"):
        data.load_prepared(tmp_path / "out")


def test_finished_dataset_is_not_overwritten_unless_asked(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(tmp_path / "a.txt")]},
                                num_shards=3)
    beam.prepare_in_process(config)
    with pytest.raises(FileExistsError, match="--overwrite"):
        beam.prepare_in_process(config)
    assert beam.prepare_in_process(config, overwrite=True)["splits"]["train"]["num_examples"] == 2
    assert len(list((tmp_path / "out").glob("train-*-of-00003.tfrecord"))) == 3  # one shard had no example


def write_image_folders(root: Path, bad: bool = True) -> dict:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    made = {}
    for label, size in (("cat", (20, 30)), ("dog", (8, 8))):
        (root / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            path = root / label / f"{i}.png"
            path.write_bytes(tf.io.encode_png(pixels).numpy())
            made[str(path)] = (pixels, label)
    if bad:
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG but not really")
    return made


def test_image_folders_decode_resize_with_prepare_images_and_skip_undecodable(tmp_path, caplog):
    from bigkeras.data.preprocessing import prepare_images

    made = write_image_folders(tmp_path / "images")
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(tmp_path / "images")]},
                                format="folders", task="image", image_size=(16, 16), channels=3, num_shards=2)
    with caplog.at_level(logging.WARNING, logger="bigkeras.prepare"):
        manifest = beam.prepare_in_process(config)
    assert manifest["metrics"]["prepare/bad_input/bad_images"] == 1 and "broken.png" in caplog.text
    assert manifest["class_names"] == ["cat", "dog"]
    x, y = data.load_prepared(tmp_path / "out").train
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.uint8 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    expected = {tuple(np.asarray(np.round(np.clip(prepare_images(p, size=(16, 16), scale=1.0), 0, 255)), np.uint8)
                      .ravel().tolist()) for p, _ in made.values()}
    assert {tuple(image.ravel().tolist()) for image in x} == expected


def test_image_csv_and_unknown_classes(tmp_path):
    made = write_image_folders(tmp_path / "images", bad=False)
    rows = [[os.path.relpath(p, tmp_path), label] for p, (_, label) in made.items()] + [["images/cat/0.png", "cow"]]
    write_tsv(tmp_path / "index.csv", ["image", "label"], [])
    with open(tmp_path / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "label"], *rows])
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(tmp_path / "index.csv")]},
                                format="csv", task="image", image_size=(8, 8), channels=1, classes=["cat", "dog"])
    manifest = beam.prepare_in_process(config)
    assert manifest["metrics"]["prepare/bad_input/unknown_labels"] == 1
    assert manifest["splits"]["train"]["num_examples"] == 6
    assert data.load_prepared(tmp_path / "out").train.x.shape == (6, 8, 8, 1)


def test_sentence_pairs_with_a_sentencepiece_vocabulary_learned_on_a_sample(tmp_path):
    pairs = data.load("dates", train_size=400)
    rows = [[s, t] for s, t in zip(pairs.train.x, pairs.train.y)]
    write_tsv(tmp_path / "train.tsv", ["source", "target"], rows)
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(tmp_path / "train.tsv")]},
                                format="tsv", task="pairs", vocabulary="sentencepiece", vocabulary_size=64,
                                sample_size=300, validation_fraction=0.25)
    manifest = beam.prepare_in_process(config)
    assert manifest["vocabulary"]["sample"]["texts"] == 300 and manifest["vocabulary"]["sample"]["of"] == 800
    assert (tmp_path / "out" / "vocabulary" / "spiece.model").is_file()
    prepared = data.load_prepared(tmp_path / "out")
    assert len(prepared.train) + len(prepared.validation) == 400 and 50 < len(prepared.validation) < 150
    got = set(zip(prepared.train.x, prepared.train.y)) | set(zip(prepared.validation.x, prepared.validation.y))
    assert got == {(s, str(t)) for s, t in rows}
    assert prepared.tokenizer().vocabulary_size() <= 64


def test_bert_packing_in_process_equals_the_recipe_features(tmp_path):
    from bigkeras import checkpoints

    reviews = data.load("rotten_tomatoes")
    keep = np.arange(len(reviews.train)) < 100
    keep |= np.array(["\n" in t for t in reviews.train.x])  # quoted TSV fields that span lines
    texts, labels = reviews.train.x[keep], reviews.train.y[keep]
    write_tsv(tmp_path / "t.tsv", ["text", "label"], [[t, reviews.class_names[y]] for t, y in zip(texts, labels)])
    loader = functools.partial(checkpoints.load_tokenizer, "all-MiniLM-L6-v2")
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"test": [str(tmp_path / "t.tsv")]},
                                format="tsv", task="bert", tokenizer=loader, tokenizer_name="all-MiniLM-L6-v2",
                                sequence_length=64, classes=reviews.class_names, num_shards=2)
    beam.prepare_in_process(config)
    packed = recipe_bert_features(texts)
    keys = ("token_ids", "segment_ids", "padding_mask", "label")
    assert example_set(tmp_path / "out" / "test", keys) == array_set(*(packed[k] for k in keys[:3]), labels)


def recipe_bert_features(texts):
    """reviews_minilm's own preparation of ``texts`` (its ``features`` function)."""
    import tensorflow as tf

    from bigkeras import checkpoints

    preprocess = data.BertSingleSegmentPreprocessor(checkpoints.load_tokenizer("all-MiniLM-L6-v2"), sequence_length=64)
    return {k: np.asarray(v, np.int32) for k, v in preprocess(tf.constant([str(t) for t in texts])).items()}


def test_cli_prepare_in_process_and_strict_exit(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\ntwo \xff\n")
    base = [PYTHON, "-m", "bigkeras.cli", "prepare", str(tmp_path / "out"), "--split",
            f"train={tmp_path / 'a.txt'}", "--in-process", "--num-shards", "2"]
    ok = subprocess.run(base, capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "train 1 examples" in ok.stdout and "bad_lines" in ok.stdout and "tfrecords:" in ok.stdout
    strict = subprocess.run(base + ["--strict", "--overwrite"], capture_output=True, text=True, env=ENV,
                            timeout=300, cwd=ROOT)
    assert strict.returncode != 0 and "a.txt:2 is not UTF-8" in strict.stderr
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_beam_args_default_to_two_direct_processes():
    from bigkeras.cli import _beam_args

    assert _beam_args([]) == list(beam.DEFAULT_PIPELINE_ARGS)
    assert "--direct_num_workers=1" in _beam_args(["--direct_num_workers=1"])
    assert "--direct_num_workers=2" not in _beam_args(["--direct_num_workers=1"])
    assert _beam_args(["--runner", "DataflowRunner", "--project", "p"]) == ["--runner", "DataflowRunner",
                                                                          "--project", "p"]


def test_load_data_reads_prepared_splits_and_requires_validation(tmp_path):
    from bigkeras import recipe

    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n")
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(tmp_path / "a.txt")]})
    beam.prepare_in_process(config)
    args = recipe.parse_args("Doc.", name="d", data=f"tfrecords:{tmp_path / 'out'}", epochs=1, batch_size=2, argv=[])
    with pytest.raises(ValueError, match="no validation, test split"):
        recipe.load_data(args)


def test_workers_read_disjoint_shards_that_cover_the_split_and_settings_are_checked(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"line {i}\n" for i in range(40)))
    config = beam.PrepareConfig(output=str(tmp_path / "out"), splits={"train": [str(tmp_path / "a.txt")]},
                                num_shards=4)
    beam.prepare_in_process(config)
    prepared = data.load_prepared(f"tfrecords:{tmp_path / 'out'}")
    parts = [{t.decode() for t in prepared.train.dataset(x="text", num_workers=2, worker_index=i).as_numpy_iterator()}
             for i in range(2)]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == {f"line {i}" for i in range(40)}
    assert len(list(prepared.limited({"train": 5}).train.dataset().as_numpy_iterator())) == 5
    with pytest.raises(ValueError, match="sequence_length=None; this recipe needs sequence_length=64"):
        prepared.require(sequence_length=64)


# ----------------------------------------------------------------------------- Beam, 2 processes


@pytest.mark.slow
def test_reviews_on_beam_equal_the_recipe_preparation_as_a_set(reviews_prepared):
    reviews, manifest, path = reviews_prepared
    assert manifest["runner"] == "DirectRunner" and manifest["metrics"]["prepare/files"] == 3
    keys = ("token_ids", "segment_ids", "padding_mask", "label")
    for key in ("train", "validation", "test"):
        packed = recipe_bert_features(reviews[key].x)
        expected = array_set(*(packed[k] for k in keys[:3]), reviews[key].y)
        assert manifest["splits"][key]["num_examples"] == len(reviews[key])
        assert example_set(path / key, keys) == expected, key
    prepared = data.load_prepared(path)
    assert sorted(prepared.test.x) == sorted(reviews.test.x)  # the raw text travels with the features


def run_recipe(name: str, tmp: Path, *flags) -> dict:
    command = [PYTHON, str(ROOT / "recipes" / f"{name}.py"), "--smoke", "--run-dir", str(tmp / "run"),
               "--export-dir", str(tmp / "export"), *SMOKE_EXPORT_FLAGS, *flags]
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((tmp / "run" / "results.json").read_text())


# The recipes train from these shards in their smoke runs (one run of each, not two): reviews_minilm in
# tests/test_recipes.py, bible_gpt in tests/test_recipes_sequence.py.


@pytest.mark.slow
def test_bible_on_beam_equals_the_recipe_preparation_as_a_set(bible_prepared):
    from bigkeras.data.bpe import byte_pair_tokenizer

    bible, manifest, path = bible_prepared
    assert manifest["vocabulary"]["sample"] == {**manifest["vocabulary"]["sample"], "texts": len(bible.train),
                                                "of": len(bible.train)}
    tokenizer = byte_pair_tokenizer(bible.train.x, vocabulary_size=512)  # bible_gpt's own, in process
    assert data.load_prepared(path).tokenizer().get_vocabulary() == tokenizer.get_vocabulary()
    keys = ("token_ids", "targets", "weights")
    for key in ("train", "validation", "test"):
        windows = bits.lm_windows(np.asarray(tokenizer("\n".join(bible[key].x)), np.int32), 128)
        assert manifest["splits"][key]["num_examples"] == len(windows[0])
        assert example_set(path / key, keys) == array_set(*windows), key


@pytest.mark.slow
def test_image_recipe_trains_from_prepared_shards(tmp_path):
    """An unchanged image recipe: its splits read themselves into numpy from the shards."""
    import tensorflow as tf

    fashion = data.load("fashion_mnist")
    for key, split in (("train", fashion.train), ("test", fashion.test)):
        for i in range(300 if key == "train" else 150):
            folder = tmp_path / "raw" / key / fashion.class_names[split.y[i]]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(split.x[i]).numpy())
    config = beam.PrepareConfig(
        output=str(tmp_path / "prepared"), splits={k: [str(tmp_path / "raw" / k)] for k in ("train", "test")},
        format="folders", task="image", image_size=(28, 28), channels=1, classes=fashion.class_names,
        validation_fraction=0.2, num_shards=2)
    beam.prepare_in_process(config)
    results = run_recipe("fashion_mnist_mlp", tmp_path, "--data", f"tfrecords:{tmp_path / 'prepared'}")
    assert results["data"] == "prepared" and Path(results["export"], "saved_model.pb").is_file()


@pytest.mark.slow
def test_worker_memory_stays_flat_as_the_corpus_grows(tmp_path):
    """The small-scale memory check: a corpus 8x larger must not raise a worker's peak memory.

    Each size runs in a fresh process (``prepare_in_process``, the same streaming code as a
    Beam worker); the full-scale check (2 GB, Beam, 2 workers) is ``bench/prepare.py --big``.
    """
    bible = data.load("bible")
    text = "\n".join(bible.train.x[:4000]) + "\n"  # about 0.6 MB
    vocabulary = tmp_path / "vocabulary"
    from bigkeras.data import vocabulary as vocabulary_lib

    vocabulary_lib.learn("bpe", list(bible.train.x[:2000]), vocabulary, vocabulary_size=300)
    peaks = {}
    for copies in (1, 8):
        folder = tmp_path / f"corpus{copies}"
        folder.mkdir()
        for i in range(2):
            (folder / f"part{i}.txt").write_text(text * (copies * 2))
        peaks[copies] = _peak_of_child(folder, vocabulary, tmp_path / f"out{copies}")
    # 8x the text (about 19 MB more): under 40 MB more memory, private or resident. The resident
    # peak (about 1.0 GB) counts some 0.57 GB of TensorFlow's and TF Text's shared library pages.
    assert peaks[8]["anon"] - peaks[1]["anon"] < 40e6, peaks
    assert peaks[8]["peak_rss"] - peaks[1]["peak_rss"] < 40e6, peaks
    assert peaks[8]["anon"] < 0.6e9 and peaks[8]["examples"] > 7 * peaks[1]["examples"], peaks


def _peak_of_child(folder, vocabulary, output) -> dict:
    script = f"""
import json, sys
from bigkeras.data import beam, vocabulary
config = beam.PrepareConfig(output={str(output)!r}, splits={{"train": [{str(folder / '*.txt')!r}]}}, task="gpt",
                            tokenizer=vocabulary.loader("bpe", {str(vocabulary)!r}), num_shards=2)
manifest = beam.prepare_in_process(config)
print(json.dumps({{"peak_rss": beam.peak_rss_bytes(), "anon": manifest["metrics"]["prepare/worker_peak_anon_bytes_max"],
                  "examples": manifest["splits"]["train"]["num_examples"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
