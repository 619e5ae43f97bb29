"""The plumbing every recipe shares, so that a recipe reads as data, model, train, export.

A recipe calls ``parse_args`` first (it splits the CPU into logical devices before
TensorFlow initialises them), loads its data with ``load_data``, trains with
``bigkeras.training.train(..., train_config(args))`` and ends with ``finish``: evaluate on
the held-out split, write ``results.json`` and ``samples.json`` into the run directory,
export for TF Serving, verify the export in a fresh process and refresh ``models.config``.

    args = recipe.parse_args(__doc__, name="fashion_mnist_cnn", epochs=6, batch_size=128)
    fashion = recipe.load_data(args)
    result = train("cnn_fashion_mnist", ..., recipe.train_config(args))
    recipe.finish(args, result, test_ds, fashion, signatures=...)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shlex
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np

from bigkeras import checks

SMOKE_SIZES = {"train": 256, "validation": 64, "test": 128}  # examples per split with --smoke
SMOKE_BATCH = 32
VALIDATION_FRACTION = 0.1  # carved out of train when a dataset has no validation split
SAMPLES = 8  # sample predictions written to samples.json
MIXED_PRECISION = ("auto", "mixed_bfloat16", "mixed_float16", "off")


def parse_args(
    doc: str,
    *,
    name: str,
    data: str,
    epochs: int,
    batch_size: int,
    learning_rate: float = 1e-3,
    mixed_precision: str | bool = False,
    extra: Sequence[tuple[Sequence[str], dict]] = (),
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """Parse the flags every recipe has (plus ``extra`` ones), then split the CPU if asked.

    Args:
        doc: the recipe's docstring; its first line is the ``--help`` description.
        name: str, the recipe name: the run directory ``runs/<name>`` and the export name.
        data: str, the default ``--data`` (an offline dataset of ``bigkeras.data.names()``).
        epochs: int, the default ``--epochs``.
        batch_size: int, the default ``--batch-size`` (per replica).
        learning_rate: float, the default ``--learning-rate`` (the peak of the schedule).
        mixed_precision: the default ``--mixed-precision``: False (float32) or a policy.
        extra: recipe-specific flags as ``(flag names, add_argument kwargs)`` pairs.
        argv: the arguments; default ``sys.argv[1:]``.

    Returns:
        The parsed ``argparse.Namespace``, with ``name``, ``command`` (the line that
        reproduces the run) and ``start`` (``time.perf_counter()`` at parse time) added.

    ``--workers HOST:PORT,... --worker-index I`` (the index defaults to ``$JOB_COMPLETION_INDEX``,
    then ``$SLURM_PROCID``) set ``TF_CONFIG``; on several workers the multi-worker strategy is
    made here, before any data, and each worker prints which one it is.

    Example:
        >>> args = parse_args(__doc__, name="mlp", data="fashion_mnist", epochs=5, batch_size=64)
    """
    start = time.perf_counter()
    parser = argparse.ArgumentParser(
        description=doc.strip().split("\n")[0], epilog="See the module docstring for details.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--epochs", type=int, default=None, help=f"passes over the training data (default {epochs}; 1 with --smoke)")
    add("--batch-size", type=int, default=batch_size, help="examples per replica per step")
    add("--learning-rate", type=float, default=learning_rate, help="peak learning rate")
    add("--strategy", default="auto", choices=("auto", "default", "one_device", "mirrored", "multi_worker"),
        help="tf.distribute strategy")
    add("--cpu-replicas", type=int, default=0, help="split the CPU into this many logical devices (mirrored)")
    add("--mixed-precision", nargs="?", const="auto", default=mixed_precision, choices=MIXED_PRECISION,
        help="mixed precision policy ('off' for float32); the bare flag means auto (bf16 on CPU, fp16 on GPU)")
    add("--data", default=data, help="an offline dataset name, tfds:NAME (prepared under --data-dir), or "
        "tfrecords:PATH (a dataset written by bigkeras prepare)")
    add("--data-dir", help="read the data files (or the TFDS data dir) from here")
    add("--run-dir", help=f"run directory (default runs/{name})")
    add("--export-dir", default="saved_models", help="TF Serving model base directory")
    add("--max-batch-size", type=int, help="rows per serving request (default: each signature's bound, sized "
        "for the model; bigkeras inspect prints them)")
    add("--xla", action="store_true", help="export with XLA-compiled signatures (TF Serving then needs "
        "--xla_cpu_compilation_enabled; bigkeras serving-command adds it)")
    add("--resume", action="store_true", help="continue an interrupted run from its backup in the run dir")
    add("--smoke", action="store_true", help="a few steps on a small slice (tests); still exports and verifies")
    add("--workers", help="train on several hosts: every worker's HOST:PORT, comma-separated, the same list on "
        "each (the first is the chief); builds TF_CONFIG")
    add("--worker-index", type=int, help="this host's place in --workers, from 0 (default: $JOB_COMPLETION_INDEX, "
        "else $SLURM_PROCID)")
    for flags, kwargs in extra:
        add(*flags, **kwargs)
    args = parser.parse_args(argv)
    args.epochs_given = args.epochs is not None
    args.epochs = epochs if args.epochs is None else args.epochs
    for flag in ("epochs", "batch_size", "cpu_replicas", "max_batch_size"):
        if getattr(args, flag) is None:
            continue
        try:
            checks.positive_int(flag, getattr(args, flag), allow_zero=flag == "cpu_replicas")
        except ValueError as err:
            parser.error(f"--{flag.replace('_', '-')}: {err}")
    args.name, args.start = name, start
    args.run_dir = args.run_dir or os.path.join("runs", name)
    args.command = _command_line(argv)

    try:
        _join_cluster(args)
    except ValueError as err:  # cluster_config.ClusterFlagError, TFConfigError: name the flag or variable
        parser.error(str(err))
    return args


def _join_cluster(args: argparse.Namespace) -> None:
    """Set ``TF_CONFIG`` from ``--workers``/``--worker-index``; on several workers set up the
    collectives now (before any dataset or op) and say which worker this is, else split the CPU.

    Logical CPU devices and the multi-worker strategy both need an untouched runtime.
    """
    from bigkeras.training import cluster_config, configure_cpu_replicas, make_strategy
    from bigkeras.training.strategy import cluster_size

    if args.workers is not None:
        if args.strategy not in ("auto", "multi_worker"):
            raise cluster_config.ClusterFlagError(f"--workers trains with --strategy multi_worker (or auto), "
                                                  f"not {args.strategy}.")
        os.environ["TF_CONFIG"] = cluster_config.tf_config_for(args.workers, args.worker_index)
    elif args.worker_index is not None:
        raise cluster_config.ClusterFlagError("--worker-index needs --workers (every worker's HOST:PORT).")
    if cluster_size() > 1 and args.strategy in ("auto", "multi_worker"):
        print(f"{args.name}: {cluster_config.describe_task(cluster_config.tf_config())}", flush=True)
        make_strategy("multi_worker")
        print(f"{args.name}: every worker answered; collectives ready", flush=True)
        return
    configure_cpu_replicas(args.cpu_replicas)


def load_data(args: argparse.Namespace, *, validation: float = VALIDATION_FRACTION):
    """Load ``args.data``, carve a validation split when it has none, slice it for ``--smoke``.

    The validation split comes out of ``train`` (seeded), so ``test`` stays untouched
    until ``finish`` evaluates on it. ``--data tfrecords:PATH`` opens a dataset prepared by
    ``bigkeras prepare`` (``bigkeras.data.PreparedData``): its splits stream from the shards
    (``split.dataset()``), or read themselves into numpy when a recipe uses ``x``/``y``;
    it must have been prepared with its validation and test splits.

    Returns:
        A ``bigkeras.data.Data`` with ``train``, ``validation`` and ``test`` splits.
    """
    from bigkeras import data as bkdata

    if bkdata.is_prepared(args.data):
        return _load_prepared(args)
    loaded = bkdata.load(args.data, data_dir=args.data_dir)
    if "validation" not in loaded.splits:
        loaded = loaded.with_validation(validation)
    if "test" not in loaded.splits:
        raise ValueError(f"`--data` {args.data!r} has no test split (splits: {sorted(loaded.splits)}).")
    if args.smoke:
        loaded = dataclasses.replace(loaded, splits={
            k: s.take(np.arange(min(len(s), SMOKE_SIZES.get(k, 64)))) for k, s in loaded.splits.items()
        })
    print(loaded.summary(), flush=True)
    return loaded


def _load_prepared(args: argparse.Namespace):
    """``load_data`` for ``tfrecords:PATH``: nothing is read yet; ``--smoke`` reads the first examples."""
    from bigkeras import data as bkdata

    loaded = bkdata.load_prepared(args.data)
    missing = [k for k in ("train", "validation", "test") if k not in loaded.splits]
    if missing:
        raise ValueError(f"`--data` {args.data!r} has no {', '.join(missing)} split (splits: {sorted(loaded.splits)}); "
                         "prepare it with those splits (bigkeras prepare --split NAME=PATTERN, "
                         "--validation-fraction to carve validation out of train).")
    if args.smoke:
        loaded = loaded.limited(SMOKE_SIZES)
    print(loaded.summary(), flush=True)
    return loaded


def own_path(result, path: str | os.PathLike) -> pathlib.Path:
    """Where this worker writes ``path``: ``path`` itself on the chief (``result.is_chief``); on
    the other workers of a multi-worker run the same name in a temporary folder, so that they
    write nothing outside one."""
    path = pathlib.Path(path)
    if getattr(result, "is_chief", True):
        return path
    import tempfile

    return pathlib.Path(tempfile.mkdtemp(prefix="bigkeras_worker_")) / path.name


def select_classes(dataset, classes: Sequence[int]):
    """Keep only ``classes`` in every split of ``dataset``, relabelled ``0..len(classes)-1``."""
    classes = list(classes)
    remap = np.full(max(len(dataset.class_names), max(classes) + 1), -1, np.int32)
    remap[classes] = np.arange(len(classes))
    splits = {}
    for key, split in dataset.splits.items():
        kept = split.take(np.isin(split.y, classes))
        splits[key] = type(kept)(kept.x, remap[kept.y])  # kept: a Split, also from a PreparedSplit
    names = tuple(dataset.class_names[c] for c in classes)
    name = f"{dataset.name}[{','.join(map(str, classes))}]"  # e.g. fashion_mnist[5,6,7,8,9]
    return dataclasses.replace(dataset, name=name, splits=splits, class_names=names)


def scale_images(images, labels):
    """uint8 pixels to float32 in [0, 1] (``prepare_images``, as the serving signatures do)."""
    from bigkeras.data.preprocessing import prepare_images

    return prepare_images(images), labels


def token_ids(vectorizer, texts) -> np.ndarray:
    """Texts to an int32 ``(n, sequence_length)`` array with an adapted ``TextVectorization``."""
    import tensorflow as tf

    ids = vectorizer(tf.constant([str(t) for t in texts]))  # tf encodes str as UTF-8
    return np.asarray(ids, dtype=np.int32)


def image_preprocessor(height: int, width: int, channels: int):
    """A ``map_fn`` taking uint8 ``(h, w, c)`` images to float32 ``(height, width, channels)``.

    Scales to [0, 1], resizes (bilinear) when the size differs, and converts grey to RGB or
    RGB to grey when the channels differ: ``prepare_images``, which the ``serving_bytes``
    signature applies in-graph too.
    """
    from bigkeras.data.preprocessing import prepare_images

    def preprocess(images, labels):
        return prepare_images(images, size=(height, width), channels=channels), labels

    return preprocess


def load_backbone(path: str | os.PathLike, *, arch: str | None = None, input_shape=None):
    """A feature extractor from a local file; never downloads.

    Args:
        path: a ``.keras`` model (a final classifier layer named ``logits``, bigkeras'
            convention, or ``predictions``, keras.applications', is cut off), a
            keras.applications weights file (``.h5``, with ``arch``), or a keras-hub preset
            directory (``config.json``, ``model.weights.h5``, ...).
        arch: str, the ``keras.applications`` constructor an ``.h5`` file belongs to. The ones
            bigkeras builds (``ResNet50``, ``VGG16``, ``InceptionV3``...: see
            ``bigkeras.checkpoints.applications.ARCHS``) give the bigkeras model without its
            top, weights loaded; any other (e.g. ``"MobileNetV2"``) falls back to
            keras.applications' own model with ``include_top=False``.
        input_shape: ``(H, W, 3)`` for ``arch`` models; default ``(32, 32, 3)``.

    Returns:
        A ``keras.Model`` from images to features ``(batch, d)`` or ``(batch, h, w, d)``.
    """
    import keras

    path = pathlib.Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"`--weights` {path} is a directory without config.json: not a keras-hub preset.")
        import keras_hub

        return keras_hub.models.Backbone.from_preset(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"`--weights` {path} does not exist; pass a .keras file, an .h5 weights file "
                                "with --arch, or a keras-hub preset directory.")
    if path.suffix == ".keras":
        model = keras.saving.load_model(path)
        if model.layers[-1].name in ("logits", "predictions"):  # drop the old classifier
            model = keras.Model(model.inputs, model.layers[-2].output, name=f"{model.name}_features")
        return model
    if path.suffix == ".h5":
        from bigkeras.checkpoints.applications import ARCHS, load_applications

        input_shape = tuple(input_shape or (32, 32, 3))
        if arch in ARCHS:
            return load_applications(path, arch=arch, include_top=False, input_shape=input_shape)
        choices = [n for n in dir(keras.applications) if n[0].isupper()]
        builder = getattr(keras.applications, checks.one_of("--arch", arch, choices))
        return builder(weights=str(path), include_top=False, input_shape=input_shape)
    raise ValueError(f"`--weights` must be a .keras file, an .h5 weights file or a preset directory, got {path}.")


def classifier_on(backbone, num_classes: int, *, image_size=None, dropout: float = 0.2, name: str = "transfer"):
    """A new ``logits`` head on ``backbone`` (features pooled when they are a map).

    The backbone runs with ``training=False``, so its batch-norm statistics stay frozen
    even when its weights are unfrozen for fine-tuning (the Keras transfer-learning guide).

    Args:
        backbone: a ``keras.Model`` taking one image tensor.
        num_classes: int, the width of the new ``logits`` layer.
        image_size: ``(H, W)`` when the backbone takes variable-size images.
        dropout: float, dropout before the logits.
        name: str, the model name.
    """
    import keras

    height, width, channels = backbone.input_shape[1:]
    if height is None or width is None:
        height, width = checks.positive_ints("image_size", image_size)
    inputs = keras.Input((height, width, channels), name="images")
    features = backbone(inputs, training=False)
    if len(features.shape) == 4:  # (batch, h, w, d) -> (batch, d)
        features = keras.layers.GlobalAveragePooling2D(name=f"{name}_avg_pool")(features)
    features = keras.layers.Dropout(dropout, name=f"{name}_dropout")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(features)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


def train_config(args: argparse.Namespace, **overrides):
    """The ``TrainConfig`` for ``args``; ``overrides`` set recipe choices (schedule, decay...).

    ``--smoke`` trains small batches without TensorBoard, one epoch unless ``--epochs`` is given.
    """
    from bigkeras.training import TrainConfig

    fields = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        strategy=args.strategy,
        cpu_replicas=args.cpu_replicas,
        mixed_precision=False if args.mixed_precision == "off" else args.mixed_precision,
        run_dir=args.run_dir,
        resume=args.resume,
        # A live per-batch progress bar with ETA in a terminal; one line per epoch in a log.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    fields.update(overrides)
    if args.smoke:
        fields.update(epochs=fields["epochs"] if getattr(args, "epochs_given", False) else 1,
                      batch_size=min(args.batch_size, SMOKE_BATCH), tensorboard=False, warmup_steps=0,
                      early_stopping_patience=None)
    return TrainConfig(**fields)


def finish(
    args: argparse.Namespace,
    result,
    test_data,
    dataset,
    *,
    signatures: Mapping,
    metric: str = "accuracy",
    batch_size: int = 256,
    details: Mapping | None = None,
) -> dict:
    """Evaluate, record, export, verify: the last step of every recipe.

    Args:
        args: the recipe's parsed arguments (from ``parse_args``).
        result: the ``TrainResult`` of ``train()``.
        test_data: the held-out split as an unbatched ``tf.data.Dataset`` the model takes,
            in the order of ``dataset.test``.
        dataset: the ``Data`` the recipe loaded (name, class names, raw test examples).
        signatures: ``{name: Signature}`` for ``export_saved_model``.
        metric: str, the compiled metric to report. Default ``"accuracy"``.
        batch_size: int, the evaluation batch size.
        details: optional JSON-ready extras for ``results.json``.

    Returns:
        The ``results.json`` record (plus ``export``, the version directory).
    """
    from bigkeras import data as bkdata

    if not getattr(result, "is_chief", True):  # the chief scores and exports; the others are done
        return publish(args, result, dataset, metric=f"test_{metric}", value=float("nan"), samples=[],
                       signatures=signatures, details=details)
    scores = result.model.evaluate(bkdata.batched(test_data, batch_size), return_dict=True, verbose=0)
    if metric not in scores:
        raise ValueError(f"`metric` must be one of the evaluated metrics {sorted(scores)}, got {metric!r}.")
    return publish(args, result, dataset, metric=f"test_{metric}", value=scores[metric],
                   samples=_sample_rows(result.model, test_data, dataset), signatures=signatures, details=details)


def _sample_rows(model, test_data, dataset) -> list[dict]:
    """The first few held-out examples with their true and predicted classes."""
    features, labels = next(iter(test_data.batch(SAMPLES)))
    probabilities = np.asarray(_softmax(model.predict(features, verbose=0)))
    raw = dataset.test.x[: len(labels)]
    rows = []
    for i, (label, probs) in enumerate(zip(np.asarray(labels), probabilities)):
        predicted = int(probs.argmax())
        example = raw[i] if raw.dtype == object else f"{dataset.name} test image #{i}"
        rows.append({
            "example": example,
            "label": _class_name(dataset, int(label)),
            "predicted": _class_name(dataset, predicted),
            "probability": round(float(probs[predicted]), 4),
        })
    return rows


def _softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _class_name(dataset, class_id: int) -> str:
    return dataset.class_names[class_id] if class_id < len(dataset.class_names) else str(class_id)


def _command_line(argv) -> str:
    """The shell line that reruns this recipe with the same flags."""
    script = pathlib.Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(pathlib.Path.cwd())
    except ValueError:
        pass
    flags = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", str(script), *flags])


# Generative recipes (GPT, BERT pre-training, seq2seq) score the held-out split themselves
# (perplexity, exact match, BLEU), so they end with ``publish``, which ``finish`` also ends with.


def load_second_data(args: argparse.Namespace, name: str):
    """``load_data`` for a recipe's second dataset: ``name`` in place of ``--data``.

    Example:
        >>> reviews = load_second_data(args, "rotten_tomatoes")  # fine-tuning after pre-training
    """
    return load_data(argparse.Namespace(**{**vars(args), "data": name}))


def publish(
    args: argparse.Namespace,
    result,
    dataset,
    *,
    metric: str,
    value: float,
    samples: Sequence[Mapping],
    signatures: Mapping,
    details: Mapping | None = None,
) -> dict:
    """Record, export, verify: the end of every recipe, given its held-out score.

    Args:
        args: the recipe's parsed arguments (from ``parse_args``).
        result: the ``TrainResult`` of the (last) ``train()``.
        dataset: the ``Data`` the score was measured on (its name goes in the record).
        metric: str, the score's name in ``results.json``, e.g. ``"test_exact_match"``.
        value: float, the score.
        samples: JSON-ready rows for ``samples.json`` (generations, translations...).
        signatures: ``{name: Signature}`` for ``export_saved_model``.
        details: optional JSON-ready extras for ``results.json`` (baselines, other splits).

    Returns:
        The ``results.json`` record (``finish``'s keys, plus ``details`` when given); on a
        multi-worker run's other workers (not the chief) nothing is written or exported and
        the record has no ``export``.
    """
    from bigkeras.serving import publish_saved_model
    from bigkeras.serving.deploy import LOW_PRECISION_TOLERANCE

    if not getattr(result, "is_chief", True):
        print(f"\n{args.name}: not the chief worker: the chief writes the results and the export.", flush=True)
        return {"recipe": args.name, "data": dataset.name, "metric": metric, "value": round(float(value), 4)}
    run_dir = pathlib.Path(result.run_dir)
    (run_dir / "samples.json").write_text(json.dumps(list(samples), indent=2, ensure_ascii=False) + "\n")
    low_precision = getattr(args, "quantize", None) or args.mixed_precision not in (False, "off")
    # Verified in a temporary directory, then renamed into place, then models.config: a server
    # polling the export directory never loads a version that did not verify.
    published = publish_saved_model(
        result.model, args.name, base_dir=args.export_dir, signatures=signatures,
        max_batch_size=getattr(args, "max_batch_size", None), jit_compile=bool(getattr(args, "xla", False)),
        verify=LOW_PRECISION_TOLERANCE if low_precision else {}, write_config=True,
    )
    path, report, config = published.path, published.report, published.config
    record = {
        "recipe": args.name,
        "data": dataset.name,
        "metric": metric,
        "value": round(float(value), 4),
        "wall_seconds": round(time.perf_counter() - args.start, 1),
        "command": args.command,
        "export": str(path),
    }
    if details:
        record["details"] = dict(details)
    (run_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"\n{args.name}: {metric} {record['value']:.4f} on {dataset.name} in {record['wall_seconds']:.0f} s"
        + "".join(f"\n  {k}  {v}" for k, v in (details or {}).items())
        + f"\n  run dir  {run_dir}  (results.json, samples.json, history.csv, curves.png, best/last.keras)\n"
        f"  export   {path}  (signatures {', '.join(sorted(report.signatures))}; verified without Keras, "
        f"{report.warmup_records} warmup requests)\n"
        f"  serving  {config}  ->  bigkeras serving-command --base-dir {args.export_dir}",
        flush=True,
    )
    return record
