"""What every checkpoint reader shares: the activation tables, reading JSON files and
safetensors headers, and checking a config's fields against sane limits and against the
weights file before anything is built.

The order every loader follows, so that a bad file costs neither memory nor a half-built
model: read the config (``read_json``) and its fields (``config_int``, ``config_float``);
read the weights file's header only (``read_header``: names, shapes, dtypes, no data) and
check that it carries the config's dimensions (``check_dimensions``) and float tensors
(``check_float``); only then read the tensors (``read_tensors``) and build the model. A
header's shapes are bounded by the file's size (safetensors checks every offset), so a
config that agrees with its header cannot ask for more memory than the file holds.

Every error is a ``CheckpointError`` that names the file and the field or tensor.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from bigkeras.checkpoints.mapping import CheckpointError

# Hugging Face activation name -> bigkeras activation, and back: the one table both
# directions and every architecture (BERT, GPT-2, T5) read.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_approximate", "gelu_pytorch_tanh": "gelu_approximate", "relu": "relu"}
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_approximate": "gelu_new", "relu": "relu"}
# The largest value an integer config field may hold (vocabulary, width, positions, layers):
# well above any published model, far below what would exhaust memory by itself.
MAX_FIELD = 2**24
# safetensors dtypes a weight may have; integer and boolean tensors are not weights.
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_MISSING = object()


class TensorInfo(NamedTuple):
    """One tensor of a safetensors header: its key in the file, shape and dtype (``"F32"``...)."""

    key: str
    shape: tuple[int, ...]
    dtype: str


# Activations
# ---------------------------------------------------------------------------------------
def activation(name, field: str, source) -> str:
    """The bigkeras activation of Hugging Face activation ``name`` (config ``field`` of ``source``)."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation {field}={name!r} is not supported; supported: {', '.join(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def hf_activation(name: str) -> str:
    """The Hugging Face name of bigkeras activation ``name``, as ``save_hf`` writes it."""
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(
            f"activation {name!r} has no Hugging Face name; save_hf writes {', '.join(HF_ACTIVATIONS)}."
        )
    return HF_ACTIVATIONS[name]


# Files
# ---------------------------------------------------------------------------------------
def read_json(path: pathlib.Path, *, kind: type = dict):
    """A JSON file holding a ``kind`` (an object by default); any other content names the file.

    Raises:
        FileNotFoundError: ``path`` does not exist (callers say what was expected there).
        CheckpointError: not UTF-8 text, not JSON, or JSON of another type.
    """
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is not a text file (byte {error.start} is not UTF-8).") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}.") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a JSON file.") from None
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{path} holds a JSON {_json_type(value)}; it must hold a JSON {_json_type(kind())}."
        )
    return value


def read_text(path: pathlib.Path) -> str:
    """A UTF-8 text file (a vocabulary, merges); binary content names the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is not a UTF-8 text file (byte {error.start}).") from None


def first_line(error: Exception) -> str:
    """The first line of an error from another library (some go on to print whole tensors)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_header(path: pathlib.Path) -> dict[str, TensorInfo]:
    """The tensors a ``.safetensors`` file declares (key -> ``TensorInfo``), without their data.

    safetensors checks the header against the file (its length, every tensor's offsets and
    byte size), so a truncated file or a header that lies about its size fails here.

    Raises:
        CheckpointError: the file is missing or is not a valid safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: a checkpoint directory needs its {path.name}.")
    try:
        with safe_open(str(path), "np") as f:
            return {key: _info(key, f.get_slice(key)) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}.") from None


def _info(key: str, tensor_slice) -> TensorInfo:
    return TensorInfo(key, tuple(int(d) for d in tensor_slice.get_shape()), str(tensor_slice.get_dtype()))


def read_metadata(path: pathlib.Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a ``.safetensors`` file (its header already read)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return dict(f.metadata() or {})


def read_tensors(path: pathlib.Path, infos: Mapping[str, TensorInfo]) -> dict[str, np.ndarray]:
    """The tensors of ``infos`` (name -> the ``TensorInfo`` of its key in ``path``) as NumPy
    (bfloat16 as ``ml_dtypes.bfloat16``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            return {name: f.get_tensor(info.key) for name, info in infos.items()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file: {error}.") from None


def h5_parameters(path: pathlib.Path) -> int:
    """How many numbers an ``.h5`` weights file holds, read from its dataset shapes only.

    Raises:
        CheckpointError: the file is not a readable HDF5 file.
    """
    import h5py

    total = 0

    def count(_, item):
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += item.size

    try:
        with h5py.File(path, "r") as f:
            f.visititems(count)
    except OSError as error:
        raise CheckpointError(f"{path} is not a readable HDF5 weights file: {first_line(error)}") from None
    return total


# Checks before building
# ---------------------------------------------------------------------------------------
def config_int(config: Mapping, field: str, source, *, default=_MISSING, low: int = 1, high: int = MAX_FIELD) -> int:
    """Integer config ``field`` of ``source``, between ``low`` and ``high``.

    Raises:
        CheckpointError: the field is missing (and has no ``default``), not an integer
            (booleans and strings included), or out of range.
    """
    if field not in config or config[field] is None:
        if default is _MISSING:
            raise CheckpointError(f"{source} lacks the field {field!r} (an integer).")
        return default
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{source}: {field}={value!r} must be an integer.")
    if not low <= value <= high:
        raise CheckpointError(f"{source}: {field}={value} is out of range; it must be between {low} and {high:,}.")
    return value


def config_float(config: Mapping, field: str, source, *, default: float, low: float = 0.0, high: float = 1.0) -> float:
    """Number config ``field`` of ``source`` (``default`` when absent), between ``low`` and ``high``."""
    value = config.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise CheckpointError(f"{source}: {field}={value!r} must be a number between {low} and {high}.")
    return float(value)


def check_heads(config: Mapping, width_field: str, heads_field: str, source) -> None:
    """Attention heads that divide the width (``hidden_size`` by ``num_attention_heads``...)."""
    width, heads = config[width_field], config[heads_field]
    if heads > width or width % heads:
        raise CheckpointError(
            f"{source}: {heads_field}={heads} must divide {width_field}={width} (each head gets an equal share)."
        )


def check_dimensions(
    header: Mapping[str, TensorInfo],
    dimensions: Mapping[str, tuple],
    layers: Iterable[tuple[str, str, int]],
    *,
    weights,
    config,
) -> None:
    """The weights file carries the sizes the config states, checked on its header alone.

    Args:
        header: tensor name (the checkpoint's own prefix removed) -> ``TensorInfo``.
        dimensions: tensor name -> ``((field, value), ...)``, one per axis: the config
            fields that set that tensor's shape and their values.
        layers: ``(prefix, field, count)``: the config says ``count`` blocks, whose tensors
            are named ``<prefix><index>.``.
        weights: the weights file, named in errors.
        config: the config file, named in errors.

    Raises:
        CheckpointError: a tensor that sets a dimension is missing or has another shape, or
            the file holds another number of blocks; it names both files and the fields.
    """
    for name, axes in dimensions.items():
        expected = tuple(value for _, value in axes)
        fields = ", ".join(f"{field}={value}" for field, value in axes)
        if name not in header:
            raise CheckpointError(f"{weights} lacks the tensor {name!r}, whose shape sets {fields} in {config}.")
        if header[name].shape != expected:
            raise CheckpointError(
                f"{config} says {fields}, so {name!r} should have shape {expected}; {weights} holds "
                f"{header[name].shape}. The config does not describe these weights."
            )
    for prefix, field, count in layers:
        found = {int(key[len(prefix):].split(".")[0]) for key in header
                 if key.startswith(prefix) and key[len(prefix):].split(".")[0].isdigit()}  # fmt: skip
        if found != set(range(count)):
            raise CheckpointError(
                f"{config} says {field}={count}; {weights} holds {len(found)} block(s) named {prefix}N "
                f"(indices {_span(found)}). The config does not describe these weights."
            )


def check_float(header: Mapping[str, TensorInfo], source) -> None:
    """Every tensor of ``header`` is a float tensor (a weight), not integers or booleans."""
    for name, info in header.items():
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{source}: tensor {info.key!r} has dtype {info.dtype}; weights must be one of "
                f"{', '.join(FLOAT_DTYPES)} (it would be cast to float32 without a word)."
            )


def _span(indices) -> str:
    return f"{min(indices)}..{max(indices)}" if indices else "none"
