"""The ``bigkeras`` command: list models, run recipes, export, inspect, verify and query servers.

    bigkeras list 'resnet*'
    bigkeras train fashion_mnist_cnn --epochs 3        # runs recipes/fashion_mnist_cnn.py
    bigkeras train fashion_mnist_cnn --workers h1:2222,h2:2222 --worker-index 0   # one of several hosts
    bigkeras manifest fashion_mnist_cnn --num-workers 2 --image IMAGE   # a Kubernetes Indexed Job + Service
    bigkeras export model.keras --name cnn             # or a registered name: bigkeras export cnn_tiny
    bigkeras inspect saved_models/cnn/1                # signatures and the TF Serving releases that load it
    bigkeras verify saved_models/cnn/1 --tf-serving 2.19
    bigkeras predict --server http://localhost:8501 --model cnn --signature serving_bytes --image cat.jpg
    bigkeras serving-command --batching
    bigkeras prepare data/reviews --split train=raw/train.tsv --format tsv --task bert --checkpoint all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import runpy
import shlex
import shutil
import sys
import traceback



def _recipes_dir() -> pathlib.Path:
    """The source tree's recipes/, or the copy an installed wheel carries as data files
    (``<prefix>/share/bigkeras/recipes``, setup.cfg), so `bigkeras train NAME` works anywhere."""
    here = pathlib.Path(__file__).resolve()
    shared = pathlib.Path("share", "bigkeras", "recipes")
    prefixes = [here.parents[4]] if len(here.parents) > 4 else []  # <prefix>/lib/pythonX.Y/site-packages/bigkeras
    for candidate in (here.parent.parent / "recipes", *(p / shared for p in (*prefixes, pathlib.Path(sys.prefix)))):
        if candidate.is_dir():
            return candidate
    return here.parent.parent / "recipes"


RECIPES = _recipes_dir()
SERVING_IMAGE = "tensorflow/serving"
QUANTIZE_METHODS = ("int8", "int8_dynamic")  # bigkeras.serving.deploy.QUANTIZE, without importing Keras


def serving_command(base_dir: str | os.PathLike = "saved_models", *, rest_port: int = 8501, grpc_port: int = 8500,
                    image: str = SERVING_IMAGE, poll_seconds: int = 60, batching_file: str | None = None,
                    server_flags=()) -> str:
    """The ``docker run`` line serving every model in ``<base_dir>/models.config``.

    Args:
        base_dir: the export root, mounted read-only at ``/models``.
        rest_port: int, the host port for REST. Default 8501.
        grpc_port: int, the host port for gRPC. Default 8500.
        image: str, the image, with its tag (``serving_image`` picks one).
        poll_seconds: int, how often the server re-reads ``models.config``. Default 60.
        batching_file: optional file name under ``base_dir`` with ``BatchingParameters``;
            adds ``--enable_batching`` and ``--batching_parameters_file``.
        server_flags: more model server flags (``served_flags`` gives those the exports need).
    """
    source = pathlib.Path(base_dir).resolve()
    args = [
        "docker", "run", "--rm", "-p", f"{rest_port}:8501", "-p", f"{grpc_port}:8500",
        "--mount", f"type=bind,source={source},target=/models,readonly",
        image,
        "--model_config_file=/models/models.config",
        f"--model_config_file_poll_wait_seconds={poll_seconds}",
        "--enable_model_warmup=true",
    ]
    if batching_file:
        args += ["--enable_batching=true", f"--batching_parameters_file=/models/{batching_file}"]
    return shlex.join([*args, *server_flags])


def served_flags(base_dir: str | os.PathLike = "saved_models") -> list[str]:
    """The model server flags the served versions need (``--xla_cpu_compilation_enabled=true`` for XLA exports)."""
    from bigkeras.serving import compatibility as compat

    flags = {flag for paths in served_versions(base_dir).values() for path in paths
             for flag in compat.load_report(path).get("server_flags", [])}
    return sorted(flags)


def served_versions(base_dir: str | os.PathLike = "saved_models") -> dict[str, list[pathlib.Path]]:
    """``{model: [version dirs]}`` that ``<base_dir>/models.config`` serves (every model found without one)."""
    from bigkeras.serving.config import CONFIG_FILE, list_versions, model_server_config, read_model_config

    base_dir = pathlib.Path(base_dir)
    path = base_dir / CONFIG_FILE
    config = read_model_config(path) if path.is_file() else model_server_config(base_dir)
    served = {}
    for entry in config.model_config_list.config:
        model_dir = base_dir / entry.base_path.rstrip("/").split("/")[-1]
        versions = list_versions(model_dir)
        policy = entry.model_version_policy
        if policy.HasField("specific"):
            versions = [v for v in versions if v in set(policy.specific.versions)]
        elif not policy.HasField("all"):  # latest (TF Serving's default: the newest one)
            versions = versions[-(policy.latest.num_versions or 1):]
        served[entry.name] = [model_dir / str(v) for v in versions]
    return served


def serving_image(base_dir: str | os.PathLike = "saved_models", *, image: str = SERVING_IMAGE,
                  tf_serving: str | None = None) -> str:
    """``image:tag`` for the newest TF Serving release that loads every served model version.

    Each version's ops are checked against ``bigkeras.serving.compatibility`` (its stored report,
    or its graph). ``tf_serving`` pins a release instead, and fails if it cannot load one of them.
    An image that already has a tag is returned as it is; so is ``image`` when nothing is served.

    Raises:
        IncompatibleRelease: no release loads every model, or ``tf_serving`` cannot load one
            (the message names the model, the version and the ops).
    """
    from bigkeras.serving import compatibility as compat

    if ":" in image.rsplit("/", 1)[-1]:
        return image
    reports = {f"{name}/{path.name}": compat.load_report(path)
               for name, paths in served_versions(base_dir).items() for path in paths}
    if not reports:
        return image
    if tf_serving is None:
        return f"{image}:{compat.newest_common_release(reports).image_tag}"
    for name, report in sorted(reports.items()):
        try:
            compat.check_release(report, tf_serving)
        except compat.IncompatibleRelease as err:
            raise compat.IncompatibleRelease(f"{name}: {err}") from None
    return f"{image}:{compat.release(tf_serving).image_tag}"


def main(argv: list[str] | None = None) -> int:
    """Run one ``bigkeras`` command; returns its exit status.

    Every failure takes one path: ``bigkeras <command>: <message>`` on one line of stderr and
    exit status 1 (raised as ``SystemExit`` with that message), with no traceback unless
    ``--traceback`` is given; whatever the command had begun to write under its output
    folder (``--base-dir``) is removed first (``_no_partial_output``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    command, args = _command_name(argv), None
    try:
        parser = _parser()
        args, rest = parser.parse_known_args(argv)
        if rest and args.command not in ("train", "prepare", "manifest"):  # prepare: Beam options; else the recipe's
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command is None:
            parser.print_help()
            return 2
        _check_inputs(args)
        with _no_partial_output(args):
            return args.run(args, rest) or 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):  # help, or a recipe's own exit status
            raise
        message = str(exit_.code).removeprefix(f"bigkeras {command}: " if command else "bigkeras: ")
    except KeyboardInterrupt:
        print(f"bigkeras {command}: interrupted" if command else "bigkeras: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one error path of every command
        if show_traceback:
            traceback.print_exc()
        message = _one_line(error)
        path = getattr(args, "path", None)
        if path and str(path) not in message:  # a library's error about a file it does not name
            message += f" (reading {path})"
    raise SystemExit(f"bigkeras {command}: {message}" if command else f"bigkeras: {message}") from None


class CommandLineError(Exception):
    """A bad command line (argparse's error, raised instead of printing usage and exiting 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CommandLineError(f"{message} (see {self.prog} --help)")


def _check_inputs(args) -> None:
    """Inputs every command needs to exist, checked before it starts."""
    if args.command == "serving-command" and not pathlib.Path(args.base_dir).is_dir():
        raise FileNotFoundError(
            f"--base-dir {args.base_dir} is not a folder: export a model there first (bigkeras export ... "
            f"--base-dir {args.base_dir})."
        )


def _command_name(argv: list[str]) -> str | None:
    """The command ``argv`` names (``export``...), for the error prefix; None if none."""
    commands = ("list", "train", "export", "inspect", "verify", "predict", "serving-command", "prepare", "manifest")
    return argv[0] if argv and argv[0] in commands else None


# Errors that speak for themselves; any other type is named before its message.
_USER_ERRORS = (ValueError, OSError, RuntimeError, LookupError, CommandLineError)
_MESSAGE_LIMIT = 600


def _one_line(error: BaseException) -> str:
    """``error``'s message on one line (its lines joined), at most ``_MESSAGE_LIMIT`` characters."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if isinstance(error, KeyError) and text.startswith("'"):
        text = f"missing key {text}"
    if not isinstance(error, _USER_ERRORS) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if len(text) > _MESSAGE_LIMIT:
        text = text[:_MESSAGE_LIMIT] + "... (--traceback shows all)"
    return text


@contextlib.contextmanager
def _no_partial_output(args):
    """Remove what a failing command created under its output folder (``args.base_dir``) and
    put back the small files it had changed there (``models.config``...), so a failure
    leaves that folder as it found it."""
    base = pathlib.Path(args.base_dir) if isinstance(getattr(args, "base_dir", None), str) else None
    existed = base is not None and base.is_dir()
    before = {p for p in base.rglob("*")} if existed else set()
    saved = {p: p.read_bytes() for p in base.iterdir() if p.is_file() and p.stat().st_size < 1 << 20} if existed else {}
    try:
        yield
    except BaseException as error:
        if base is not None and not (isinstance(error, SystemExit) and error.code in (None, 0)):
            _restore(base, existed, before, saved)
        raise


def _restore(base: pathlib.Path, existed: bool, before: set, saved: dict) -> None:
    if not existed:
        shutil.rmtree(base, ignore_errors=True)
        return
    for path in sorted(set(base.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for path, content in saved.items():
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bigkeras", description=__doc__.split("\n")[0])
    parser.add_argument("--traceback", action="store_true", help="on a failure, print the full traceback too")
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("list", help="registered models (and recipes)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")
    p.set_defaults(run=_list)

    p = sub.add_parser("train", help="run recipes/NAME.py with the remaining arguments")
    p.add_argument("name", help="recipe name, e.g. fashion_mnist_cnn")
    p.set_defaults(run=_train)

    p = sub.add_parser("export", help="export a .keras file or a registered model for TF Serving")
    p.add_argument("source", help="a .keras file, or a registered model name (untrained, for smoke tests)")
    p.add_argument("--name", help="model name in saved_models/ (default: the source's stem)")
    p.add_argument("--base-dir", default="saved_models")
    p.add_argument("--version", type=int)
    p.add_argument("--class-names", help="comma-separated class names (adds a class_name output)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check in a fresh process")
    p.add_argument("--quantize", choices=list(QUANTIZE_METHODS),
                   help="export an int8 copy: int8 (weights only, dequantized in the graph: the fastest measured), "
                        "int8_dynamic (Keras' int8 layers, activations quantized per call)")
    p.add_argument("--xla", action="store_true",
                   help="compile each signature's model call with XLA (TF Serving needs --xla_cpu_compilation_enabled)")
    p.add_argument("--max-batch-size", type=int, help="rows per request (default: each signature's bound, sized for the model)")
    p.set_defaults(run=_export)

    p = sub.add_parser("inspect", help="signatures of a SavedModel and the TF Serving releases that load it")
    p.add_argument("path")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("verify", help="run an export as TF Serving does (session, SignatureDefs, warmup), without Keras")
    p.add_argument("path")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--tf-serving", metavar="RELEASE", help="fail unless this TF Serving release (e.g. 2.19) loads it")
    p.set_defaults(run=_verify)

    p = sub.add_parser("predict", help="query a TF Serving server (REST or gRPC)")
    p.add_argument("--server", required=True, help="http://host:8501 (REST) or host:8500 (gRPC)")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int)
    p.add_argument("--signature", help="signature name (default serving_default)")
    p.add_argument("--timeout", type=float, default=10.0)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--json", help='inputs as JSON, e.g. \'{"text": ["great film"]}\'')
    group.add_argument("--text", nargs="+", help="strings for a model whose input is `text`")
    group.add_argument("--image", nargs="+", help="image files for the `serving_bytes` signature")
    p.set_defaults(run=_predict)

    p = sub.add_parser("serving-command", help="print the docker run line for TF Serving")
    p.add_argument("--base-dir", default="saved_models")
    p.add_argument("--rest-port", type=int, default=8501)
    p.add_argument("--grpc-port", type=int, default=8500)
    p.add_argument("--image", default=SERVING_IMAGE, help="image; without a tag, the newest release that loads every model")
    p.add_argument("--tf-serving", metavar="RELEASE", help="use this TF Serving release (e.g. 2.19); fail if it cannot load a model")
    p.add_argument("--no-config", action="store_true", help="do not (re)write models.config first")
    p.add_argument("--batching", action="store_true", help="write batching_parameters.txt and enable server-side batching")
    p.add_argument("--max-batch-size", type=int,
                   help="rows per batch (default and maximum: the smallest row bound of the served signatures)")
    p.add_argument("--batch-timeout-micros", type=int, default=1000)
    p.add_argument("--batch-threads", type=int, help="threads that run batches (default: this machine's CPU count)")
    p.set_defaults(run=_serving_command)

    p = sub.add_parser("manifest", help="write a Kubernetes Indexed Job + headless Service that runs "
                       "`bigkeras train NAME` on several pods (the remaining arguments go to the recipe)")
    p.add_argument("name", help="recipe name, e.g. fashion_mnist_cnn")
    p.add_argument("--num-workers", type=int, required=True, help="pods; pod 0 is the chief")
    p.add_argument("--image", required=True, help="a container image with bigkeras installed")
    p.add_argument("--port", type=int, default=2222, help="the workers' collective port")
    p.add_argument("--job", help="the Job's name (default: the recipe's, with '-')")
    p.add_argument("--claim", help="a ReadWriteMany PersistentVolumeClaim for the run directory and exports")
    p.add_argument("--mount", default="/shared", help="where --claim is mounted")
    p.add_argument("--output", help="write the YAML here (default: print it)")
    p.set_defaults(run=_manifest)

    _prepare_parser(sub)
    return parser


def _prepare_parser(sub) -> None:
    p = sub.add_parser(
        "prepare", help="prepare raw files into sharded TFRecords on Apache Beam (recipes: --data tfrecords:OUTPUT)",
        description="Any other --option is a Beam pipeline option (default --runner=DirectRunner "
                    "--direct_running_mode=multi_processing --direct_num_workers=2).")
    p.add_argument("output", help="the dataset folder (shards, specs, vocabulary/, dataset.json written last)")
    p.add_argument("--split", action="append", required=True, metavar="NAME=PATTERN",
                   help="a split and a file pattern (repeat; several patterns per split allowed)")
    p.add_argument("--format", default="lines", choices=("lines", "csv", "tsv", "folders"))
    p.add_argument("--task", default="text", choices=("text", "bert", "gpt", "image", "pairs"))
    p.add_argument("--num-shards", type=int, default=8, help="shards per split")
    p.add_argument("--checkpoint", help="tokenize with this checkpoint's tokenizer (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--vocabulary", choices=("bpe", "wordpiece", "sentencepiece"), help="learn this vocabulary")
    p.add_argument("--vocabulary-size", type=int, default=4096)
    p.add_argument("--sample-size", type=int, default=100_000, help="texts the vocabulary is learned on")
    p.add_argument("--sequence-length", type=int, default=128, help="BERT packing length or GPT window")
    p.add_argument("--image-size", help="HEIGHT,WIDTH images are resized to")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3))
    p.add_argument("--classes", help="comma-separated class names in id order (default: the sorted labels seen)")
    for role in ("text", "label", "source", "target", "image"):
        p.add_argument(f"--{role}-column", default=role, help=f"CSV/TSV column of the {role}"
                       + (" ('' for unlabelled)" if role == "label" else ""))
    p.add_argument("--validation-fraction", type=float, default=0.0, help="share of train moved to validation")
    p.add_argument("--name", default="", help="dataset name in dataset.json")
    p.add_argument("--strict", action="store_true", help="stop at the first bad input instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared dataset in OUTPUT")
    p.add_argument("--in-process", action="store_true", help="run in this process without Beam (small data)")
    p.set_defaults(run=_prepare)


def _prepare(args, rest):
    import functools

    from bigkeras.data import beam

    splits = {}
    for item in args.split:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            raise SystemExit(f"bigkeras prepare: --split must be NAME=PATTERN, got {item!r}.")
        splits.setdefault(name, []).append(pattern)
    if rest and not rest[0].startswith("--"):
        raise SystemExit(f"bigkeras prepare: unrecognized arguments {rest} (Beam options start with --).")
    tokenizer = None
    if args.checkpoint:
        from bigkeras import checkpoints

        tokenizer = functools.partial(checkpoints.load_tokenizer, args.checkpoint)
    columns = {r: getattr(args, f"{r}_column") or None for r in ("text", "label", "source", "target", "image")}
    try:
        config = beam.PrepareConfig(
            output=args.output, splits=splits, format=args.format, task=args.task, num_shards=args.num_shards,
            columns=columns, classes=args.classes.split(",") if args.classes else None, tokenizer=tokenizer,
            tokenizer_name=args.checkpoint, vocabulary=args.vocabulary, vocabulary_size=args.vocabulary_size,
            sample_size=args.sample_size, sequence_length=args.sequence_length,
            image_size=tuple(int(v) for v in args.image_size.split(",")) if args.image_size else None,
            channels=args.channels, validation_fraction=args.validation_fraction, strict=args.strict,
            name=args.name)
        manifest = (beam.prepare_in_process(config, overwrite=args.overwrite) if args.in_process else
                    beam.prepare(config, _beam_args(rest), overwrite=args.overwrite))
    except (ValueError, FileExistsError) as err:
        raise SystemExit(f"bigkeras prepare: {err}") from None
    sizes = ", ".join(f"{k} {v['num_examples']:,}" for k, v in manifest["splits"].items())
    bad_input = {k: v for k, v in manifest["metrics"].items() if "/bad_input/" in k}
    print(f"prepared {args.output}: {sizes} examples in {args.num_shards} shards per split, {manifest['seconds']:.0f} s ({manifest['runner']}); bad input skipped: "
          f"{bad_input or 'none'}\n  train on it: bigkeras train RECIPE --data tfrecords:{args.output}")


def _beam_args(rest: list[str]) -> list[str]:
    """Beam options from the command line, DirectRunner with 2 processes unless they say otherwise."""
    import re

    from bigkeras.data.beam import DEFAULT_PIPELINE_ARGS

    if re.search(r"--runner[= ](?!DirectRunner)", " ".join(rest)):
        return list(rest)  # another runner: none of the DirectRunner defaults apply
    given = {r.split("=")[0] for r in rest if r.startswith("--")}
    return [*(d for d in DEFAULT_PIPELINE_ARGS if d.split("=")[0] not in given), *rest]


def _list(args, rest):
    import bigkeras

    for name in bigkeras.list_models(args.pattern):
        print(name)
    recipes = sorted(p.stem for p in RECIPES.glob("*.py")) if RECIPES.is_dir() else []
    if recipes:
        print("\nrecipes (bigkeras train NAME):\n  " + "\n  ".join(recipes))


def _train(args, rest):
    path = RECIPES / f"{args.name}.py"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.py"))) or "none yet"
        raise SystemExit(f"bigkeras train: no recipe {args.name!r} in {RECIPES}; known recipes: {known}.")
    sys.argv = [str(path), *rest]
    runpy.run_path(str(path), run_name="__main__")


def _manifest(args, rest):
    from bigkeras.training.manifest import kubernetes_manifest

    if not (RECIPES / f"{args.name}.py").is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.py"))) or "none yet"
        raise SystemExit(f"bigkeras manifest: no recipe {args.name!r} in {RECIPES}; known recipes: {known}.")
    if any(a == "--workers" or a.startswith(("--workers=", "--worker-index")) for a in rest):
        raise CommandLineError("--workers and --worker-index come from the manifest (--num-workers; each pod's "
                               "JOB_COMPLETION_INDEX); leave them out.")
    rest = rest[1:] if rest[:1] == ["--"] else rest
    text = kubernetes_manifest(args.name, workers=args.num_workers, image=args.image, port=args.port, job=args.job,
                               recipe_args=rest, claim=args.claim, mount=args.mount)
    if args.output:
        pathlib.Path(args.output).write_text(text)
        print(f"wrote {args.output}: kubectl apply -f {args.output}")
    else:
        print(text, end="")


def _export(args, rest):
    import keras

    import bigkeras
    from bigkeras.serving import default_signatures, publish_saved_model

    if args.source.endswith(".keras"):
        model = keras.saving.load_model(args.source)
        name = args.name or pathlib.Path(args.source).stem
    else:
        model = bigkeras.build(args.source)
        name = args.name or args.source
    class_names = args.class_names.split(",") if args.class_names else None
    # Verified in a temporary directory before it is renamed into place; models.config after that.
    published = publish_saved_model(
        model, name, base_dir=args.base_dir, version=args.version, overwrite=args.overwrite,
        signatures=lambda m: default_signatures(m, class_names=class_names), quantize=args.quantize,
        max_batch_size=args.max_batch_size, verify=not args.no_verify, write_config=True, jit_compile=args.xla,
    )
    report = published.report
    if report is not None:
        minimum = report.compatibility["minimum_release"]
        print(f"verified: {', '.join(report.parity_checked)} match Keras; {report.warmup_records} warmup records replay; "
              + (f"loads on TF Serving {minimum}+" if minimum else "no TF Serving release in the table loads it"))
    print(f"exported {published.path}{'' if report else ' (not verified: --no-verify)'}\nwrote {published.config}")


def _inspect(args, rest):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from bigkeras.serving import bounds
    from bigkeras.serving import compatibility as compat

    path = pathlib.Path(args.path)
    if not (path / "saved_model.pb").is_file():
        raise SystemExit(f"bigkeras inspect: {path} is not a SavedModel directory (no saved_model.pb).")
    try:
        saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and its kin
        raise SystemExit(f"bigkeras inspect: {path / 'saved_model.pb'} is not a SavedModel protocol buffer "
                         f"(corrupt or another file): {err}") from None
    for meta in saved.meta_graphs:  # the SignatureDefs TF Serving reads, as saved_model_cli shows them
        for name, signature in sorted(meta.signature_def.items()):
            if name == "__saved_model_init_op":
                continue
            print(f"signature_def['{name}']:")
            for kind, infos in (("inputs", signature.inputs), ("outputs", signature.outputs)):
                print(f"  {kind}:")
                for key, info in sorted(infos.items()):
                    print(f"    {key}: {tf.as_dtype(info.dtype).name} {_shape(tf.TensorShape(info.tensor_shape))}")
    stored = compat.report_path(path).is_file()
    print(f"TF Serving compatibility ({'assets.extra/' + compat.REPORT_FILE if stored else 'computed from the graph'}):")
    print(compat.summary(compat.load_report(path)))
    print(f"Request bounds (assets.extra/{bounds.BOUNDS_FILE}; a request over one is refused with INVALID_ARGUMENT):")
    print(bounds.summary(bounds.load_bounds(path)))


def _verify(args, rest):
    from bigkeras.serving import verify

    if not pathlib.Path(args.path).is_dir():
        raise FileNotFoundError(f"{args.path} is not a directory: pass a SavedModel version folder.")
    report = verify(args.path, atol=args.atol, tf_serving=args.tf_serving)
    print(json.dumps({k: getattr(report, k) for k in report.__dataclass_fields__}, indent=2))


def _predict(args, rest):
    from bigkeras.serving import GrpcClient, RestClient

    if args.json:
        try:
            inputs = json.loads(args.json)
        except json.JSONDecodeError as err:
            raise ValueError(f"--json is not valid JSON ({err}); e.g. '{{\"text\": [\"great film\"]}}'.") from None
        if not isinstance(inputs, dict):
            raise ValueError(f"--json must be an object of named inputs, e.g. '{{\"text\": [\"great film\"]}}'; "
                             f"got {args.json[:80]!r}.")
    elif args.text:
        inputs = {"text": args.text}
    else:
        inputs = {"image_bytes": [pathlib.Path(p).read_bytes() for p in args.image]}
    signature = args.signature or ("serving_bytes" if args.image else None)
    if args.server.startswith(("http://", "https://")):
        client = RestClient(args.server, args.model, version=args.version, timeout=args.timeout)
    else:
        client = GrpcClient(args.server, args.model, version=args.version, timeout=args.timeout)
    outputs = client.predict(inputs, signature_name=signature)
    print(json.dumps({k: _jsonable(v.tolist()) for k, v in outputs.items()}))


def _serving_command(args, rest):
    from bigkeras.serving import IncompatibleRelease
    from bigkeras.serving.batching import batch_size_within_bounds, unbatchable_inputs, write_batching_parameters
    from bigkeras.serving.bounds import bucket_sizes

    if not args.no_config:
        from bigkeras.serving.config import write_model_config

        write_model_config(args.base_dir)
    try:
        image = serving_image(args.base_dir, image=args.image, tf_serving=args.tf_serving)
    except (IncompatibleRelease, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"bigkeras serving-command: {err}") from None
    batching_file = None
    if args.batching:
        try:
            max_batch_size = batch_size_within_bounds(served_versions(args.base_dir), args.max_batch_size)
            batching_file = write_batching_parameters(
                args.base_dir, max_batch_size=max_batch_size, allowed_batch_sizes=bucket_sizes(max_batch_size),
                batch_timeout_micros=args.batch_timeout_micros, num_batch_threads=args.batch_threads,
            ).name
        except ValueError as err:
            raise SystemExit(f"bigkeras serving-command: {err}") from None
        scalars = [f"{name}/{path.name}: {where}" for name, paths in served_versions(args.base_dir).items()
                   for path in paths if (path / "saved_model.pb").is_file() for where in unbatchable_inputs(path)]
        if scalars:
            print("bigkeras serving-command: batching concatenates inputs along their first axis; these inputs "
                  "have none, so their requests cannot be batched: " + "; ".join(scalars), file=sys.stderr)
    print(serving_command(args.base_dir, rest_port=args.rest_port, grpc_port=args.grpc_port, image=image,
                          batching_file=batching_file, server_flags=served_flags(args.base_dir)))


def _shape(shape) -> str:
    return "unknown rank" if shape.rank is None else "(" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + ")"


def _jsonable(value):
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


if __name__ == "__main__":
    sys.exit(main())
