"""Server-side batching for TF Serving: ``batching_parameters.txt`` and the inputs it cannot batch.

With ``--enable_batching``, TF Serving queues concurrent requests to a model and runs them as
one batch, concatenated along every input's first axis (``tensorflow_serving/batching``). The
``BatchingParameters`` text proto sets the batch size, how long a request may wait for others
and the threads that run batches. Those threads compete with TensorFlow's own for the CPU, so
the default sizes them to the machine's cores, as the batching guide advises, and queues only
as many batches as there are threads (its advice for online serving with bounded latency).

    path = write_batching_parameters("saved_models")   # saved_models/batching_parameters.txt
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

from bigkeras import checks

BATCHING_FILE = "batching_parameters.txt"


def batching_parameters(*, max_batch_size: int = 32, allowed_batch_sizes: Sequence[int] = (),
                        batch_timeout_micros: int = 1000, num_batch_threads: int | None = None,
                        max_enqueued_batches: int | None = None) -> str:
    """A ``BatchingParameters`` text proto for ``--batching_parameters_file``.

    Args:
        max_batch_size: int, the most requests' rows run as one batch. Default 32.
        allowed_batch_sizes: increasing row counts a batch is padded up to, the last equal
            to ``max_batch_size`` (TF Serving's rule); the export's warmup covers
            ``bounds.bucket_sizes``, so those batches never meet a first-time shape.
            Default none (batches run at any size).
        batch_timeout_micros: int, how long a partial batch waits for more requests. Default
            1000 (the guide's "slightly above zero, e.g. 1 millisecond").
        num_batch_threads: int, threads that run batches; default the machine's CPU count.
        max_enqueued_batches: int, batches queued before requests are refused; default
            ``num_batch_threads``.

    Returns:
        The text proto, one ``field { value: N }`` per line.
    """
    threads = num_batch_threads if num_batch_threads is not None else (os.cpu_count() or 1)
    values = {
        "max_batch_size": checks.positive_int("max_batch_size", max_batch_size),
        "batch_timeout_micros": checks.positive_int("batch_timeout_micros", batch_timeout_micros, allow_zero=True),
        "max_enqueued_batches": checks.positive_int(
            "max_enqueued_batches", max_enqueued_batches if max_enqueued_batches is not None else threads),
        "num_batch_threads": checks.positive_int("num_batch_threads", threads),
    }
    allowed = [checks.positive_int("allowed_batch_sizes", n) for n in allowed_batch_sizes]
    if allowed and (allowed != sorted(set(allowed)) or allowed[-1] != values["max_batch_size"]):
        raise ValueError(f"`allowed_batch_sizes` must increase and end with `max_batch_size` "
                         f"({values['max_batch_size']}), got {allowed}.")
    text = "".join(f"{field} {{ value: {value} }}\n" for field, value in values.items())
    return text + "".join(f"allowed_batch_sizes: {n}\n" for n in allowed)


def batch_size_within_bounds(served: Mapping[str, Sequence[os.PathLike]], max_batch_size: int | None = None) -> int:
    """The batch size every served signature accepts: the smallest of their row bounds.

    A batch bigger than a signature's ``max_rows`` would be refused by the export's own
    bound, so the batcher must not build one.

    Args:
        served: ``{model: [version directories]}`` (``cli.served_versions``).
        max_batch_size: optional int the user asked for; it must be within every bound.

    Raises:
        ValueError: ``max_batch_size`` is over a served signature's bound (named).
    """
    from bigkeras.serving.bounds import load_bounds

    bounds = {f"{name}/{pathlib.Path(path).name} {sig}": b["max_rows"]
              for name, paths in served.items() for path in paths for sig, b in load_bounds(path).items()}
    if max_batch_size is None:
        return min(bounds.values(), default=32)
    checks.positive_int("max_batch_size", max_batch_size)
    over = sorted(f"{where} ({rows} rows)" for where, rows in bounds.items() if rows < max_batch_size)
    if over:
        raise ValueError(f"`--max-batch-size` {max_batch_size} is over the request bound of {', '.join(over)}; "
                         "leave it out to use the smallest bound.")
    return max_batch_size


def write_batching_parameters(base_dir: str | os.PathLike = "saved_models", **kwargs) -> pathlib.Path:
    """Write ``<base_dir>/batching_parameters.txt`` (``batching_parameters`` keyword arguments)."""
    path = pathlib.Path(base_dir) / BATCHING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{BATCHING_FILE}.tmp-{os.getpid()}")
    tmp.write_text(batching_parameters(**kwargs))
    os.replace(tmp, path)
    return path


def unbatchable_inputs(export_dir: str | os.PathLike) -> list[str]:
    """``"signature/input"`` for every SignatureDef input without a first (batch) axis.

    Batching concatenates inputs along their first axis, so a scalar input (such as
    ``generate``'s ``max_new_tokens``) cannot be batched.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((pathlib.Path(export_dir) / "saved_model.pb").read_bytes())
    found = []
    for meta in saved.meta_graphs:
        for name, signature in sorted(meta.signature_def.items()):
            for key, info in sorted(signature.inputs.items()):
                shape = info.tensor_shape
                if not shape.unknown_rank and len(shape.dim) == 0:
                    found.append(f"{name}/{key}")
    return found
