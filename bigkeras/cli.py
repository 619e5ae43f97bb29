"""The ``bigkeras`` command: list models, run recipes, export, inspect, verify and query servers.

    bigkeras list 'resnet*'
    bigkeras train fashion_mnist_cnn --epochs 3        # runs recipes/fashion_mnist_cnn.py
    bigkeras export model.keras --name cnn             # or a registered name: bigkeras export cnn_tiny
    bigkeras inspect saved_models/cnn/1
    bigkeras verify saved_models/cnn/1
    bigkeras predict --server http://localhost:8501 --model cnn --signature serving_bytes --image cat.jpg
    bigkeras serving-command
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import runpy
import shlex
import sys

RECIPES = pathlib.Path(__file__).resolve().parent.parent / "recipes"
SERVING_IMAGE = "tensorflow/serving"


def serving_command(base_dir: str | os.PathLike = "saved_models", *, rest_port: int = 8501, grpc_port: int = 8500,
                    image: str = SERVING_IMAGE, poll_seconds: int = 60) -> str:
    """The ``docker run`` line serving every model in ``<base_dir>/models.config``."""
    source = pathlib.Path(base_dir).resolve()
    args = [
        "docker", "run", "--rm", "-p", f"{rest_port}:8501", "-p", f"{grpc_port}:8500",
        "--mount", f"type=bind,source={source},target=/models,readonly",
        image,
        "--model_config_file=/models/models.config",
        f"--model_config_file_poll_wait_seconds={poll_seconds}",
        "--enable_model_warmup=true",
    ]
    return shlex.join(args)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 2
    return args.run(args, rest) or 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bigkeras", description=__doc__.split("\n")[0])
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
    p.set_defaults(run=_export)

    p = sub.add_parser("inspect", help="signatures of a SavedModel, like saved_model_cli show --all")
    p.add_argument("path")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("verify", help="parity check of an export in a fresh process without Keras")
    p.add_argument("path")
    p.add_argument("--atol", type=float, default=1e-5)
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
    p.add_argument("--image", default=SERVING_IMAGE)
    p.add_argument("--no-config", action="store_true", help="do not (re)write models.config first")
    p.set_defaults(run=_serving_command)
    return parser


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


def _export(args, rest):
    import keras

    import bigkeras
    from bigkeras.serving import default_signatures, export_saved_model, verify, write_model_config

    if args.source.endswith(".keras"):
        model = keras.saving.load_model(args.source)
        name = args.name or pathlib.Path(args.source).stem
    else:
        model = bigkeras.build(args.source)
        name = args.name or args.source
    class_names = args.class_names.split(",") if args.class_names else None
    path = export_saved_model(model, name, base_dir=args.base_dir, version=args.version,
                              signatures=default_signatures(model, class_names=class_names), overwrite=args.overwrite)
    config = write_model_config(args.base_dir)
    print(f"exported {path}\nwrote {config}")
    if not args.no_verify:
        report = verify(path)
        print(f"verified: {', '.join(report.parity_checked)} match Keras; {report.warmup_records} warmup records replay")


def _inspect(args, rest):
    import tensorflow as tf

    path = pathlib.Path(args.path)
    if not (path / "saved_model.pb").is_file():
        raise SystemExit(f"bigkeras inspect: {path} is not a SavedModel directory (no saved_model.pb).")
    loaded = tf.saved_model.load(str(path))
    for name, fn in sorted(loaded.signatures.items()):
        print(f"signature_def['{name}']:")
        print("  inputs:")
        for key, spec in sorted(fn.structured_input_signature[1].items()):
            print(f"    {key}: {spec.dtype.name} {_shape(spec.shape)}")
        print("  outputs:")
        for key, spec in sorted(fn.structured_outputs.items()):
            print(f"    {key}: {spec.dtype.name} {_shape(spec.shape)}")


def _verify(args, rest):
    from bigkeras.serving import verify

    report = verify(args.path, atol=args.atol)
    print(json.dumps({k: getattr(report, k) for k in report.__dataclass_fields__}, indent=2))


def _predict(args, rest):
    from bigkeras.serving import GrpcClient, RestClient

    if args.json:
        inputs = json.loads(args.json)
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
    if not args.no_config:
        from bigkeras.serving.config import write_model_config

        write_model_config(args.base_dir)
    print(serving_command(args.base_dir, rest_port=args.rest_port, grpc_port=args.grpc_port, image=args.image))


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
