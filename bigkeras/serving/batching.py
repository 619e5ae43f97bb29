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

from bigkeras import checks

BATCHING_FILE = "batching_parameters.txt"


def batching_parameters(*, max_batch_size: int = 32, batch_timeout_micros: int = 1000,
                        num_batch_threads: int | None = None, max_enqueued_batches: int | None = None) -> str:
    """A ``BatchingParameters`` text proto for ``--batching_parameters_file``.

    Args:
        max_batch_size: int, the most requests' rows run as one batch. Default 32.
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
    return "".join(f"{field} {{ value: {value} }}\n" for field, value in values.items())


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
