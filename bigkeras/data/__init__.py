"""Data for bigkeras: offline datasets, tf.data pipelines and sharded TFRecords.

    from bigkeras import data
    fashion = data.load("fashion_mnist")                  # numpy splits, fixed and seeded
    train = data.from_arrays(*fashion.train, shuffle=True)  # unbatched tf.data.Dataset
    test = data.batched(data.from_arrays(*fashion.test), 256)
    reviews = data.load("tfds:imdb_reviews", data_dir="/data/tfds")  # prepared, never downloaded

``data.names()`` lists the offline datasets; each loader's docstring gives its source,
sizes and split (``bigkeras.data.images``, ``.text``, ``.pairs``).

Data at scale: ``bigkeras.data.beam`` (Apache Beam, the ``beam`` extra; ``bigkeras prepare``)
writes sharded TFRecords that ``load_prepared("PATH")`` (recipes: ``--data tfrecords:PATH``) reads.
"""

from bigkeras.data.base import SEED, Data, DataFileError, Split, random_splits
from bigkeras.data.datasets import load, load_tfds, names
from bigkeras.data.packing import BertSingleSegmentPreprocessor
from bigkeras.data.prepared import PreparedData, PreparedSplit, is_prepared, load_prepared
from bigkeras.data.pipeline import (
    augment_images,
    batched,
    from_arrays,
    sentencepiece_tokenizer,
    text_vectorizer,
    wordpiece_tokenizer,
)
from bigkeras.data.tfrecords import read_spec, read_tfrecords, shard_paths, write_tfrecords

__all__ = [
    "BertSingleSegmentPreprocessor",
    "SEED",
    "Data",
    "DataFileError",
    "Split",
    "augment_images",
    "batched",
    "from_arrays",
    "is_prepared",
    "load",
    "load_prepared",
    "load_tfds",
    "names",
    "random_splits",
    "PreparedData",
    "PreparedSplit",
    "read_spec",
    "read_tfrecords",
    "sentencepiece_tokenizer",
    "shard_paths",
    "text_vectorizer",
    "wordpiece_tokenizer",
    "write_tfrecords",
]
