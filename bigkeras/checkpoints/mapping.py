"""One table per architecture, read in both directions: checkpoint tensors <-> Keras variables.

A converter lists ``Tensor(key, variable, transpose, split)`` entries, built from the model's
exposed parts. Loading checks every entry against the checkpoint (missing and unexpected
tensors, every shape) before it assigns anything, so a mismatch never leaves a model half
loaded; saving reads the same table backwards, so a round trip is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names the file, tensor and shapes."""


@dataclass(frozen=True)
class Tensor:
    """One checkpoint tensor and the Keras variable it fills (``Tensor.linear`` and
    ``Tensor.vector`` build the common kinds).

    Args:
        key: the tensor's name in the checkpoint, e.g. ``"encoder.layer.0.attention.self.query.weight"``.
        variable: the ``keras.Variable`` it fills.
        transpose: True for a PyTorch ``Linear`` weight, stored ``(out, in)``: the Keras kernel
            is its transpose, reshaped. False for tensors stored as Keras stores them.
        split: for ``transpose``, how many leading kernel axes are inputs (an attention output
            kernel ``(heads, head_dim, hidden)`` has 2; every other kernel 1).
        flat: True when the checkpoint stores the variable as a vector (an attention bias
            ``(heads, head_dim)`` is stored ``(hidden,)``).
    """

    key: str
    variable: object
    transpose: bool = False
    split: int = 1
    flat: bool = False

    @classmethod
    def linear(cls, key: str, variable, split: int = 1) -> Tensor:
        """A PyTorch ``Linear`` weight ``(out, in)`` for a Keras kernel."""
        return cls(key, variable, transpose=True, split=split)

    @classmethod
    def vector(cls, key: str, variable) -> Tensor:
        """A tensor stored flat (biases, norm scales)."""
        return cls(key, variable, flat=True)

    @property
    def file_shape(self) -> tuple[int, ...]:
        """The shape the checkpoint stores this tensor in."""
        shape = tuple(self.variable.shape)
        if self.transpose:
            return (math.prod(shape[self.split :]), math.prod(shape[: self.split]))
        return (math.prod(shape),) if self.flat else shape

    def to_keras(self, array: np.ndarray) -> np.ndarray:
        array = array.T if self.transpose else array
        return np.reshape(array, self.variable.shape)

    def to_file(self) -> np.ndarray:
        array = np.asarray(keras_value(self.variable), dtype=np.float32)
        if self.transpose:
            return np.ascontiguousarray(np.reshape(array, self.file_shape[::-1]).T)
        return np.reshape(array, self.file_shape)


def keras_value(variable):
    """The value of a Keras variable (or of an array standing in for one) as NumPy."""
    import keras

    return keras.ops.convert_to_numpy(getattr(variable, "value", variable))


def assign(
    table: Sequence[Tensor],
    tensors: Mapping[str, np.ndarray],
    *,
    source: str,
    ignored: Iterable[str] = (),
    optional: Iterable[str] = (),
) -> list[str]:
    """Fill every variable of ``table`` from ``tensors``, after checking all of them.

    Args:
        table: the architecture's entries.
        tensors: checkpoint key -> array (the checkpoint's own prefix already removed).
        source: the file (or directory) named in errors.
        ignored: keys (buffers, other heads) that may be present and are not loaded.
        optional: keys that may be absent (their variables keep their initial values).

    Returns:
        The table keys that were absent and optional (left at their initial values).

    Raises:
        CheckpointError: a missing or unexpected tensor, or a shape that differs, naming the
            tensor and both shapes. Nothing has been assigned when it raises.
    """
    expected = {entry.key for entry in table}
    ignored, optional = set(ignored), set(optional)
    missing = sorted(expected - set(tensors) - optional)
    unexpected = sorted(set(tensors) - expected - ignored)
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} tensor(s) the model needs: {_some(missing)}.")
    if unexpected:
        raise CheckpointError(
            f"{source} has {len(unexpected)} tensor(s) this model has no place for: {_some(unexpected)}."
        )
    for entry in table:
        if entry.key in tensors and tuple(tensors[entry.key].shape) != entry.file_shape:
            raise CheckpointError(
                f"{source}: tensor {entry.key!r} has shape {tuple(tensors[entry.key].shape)}, the model expects "
                f"{entry.file_shape} (Keras variable {entry.variable.path} {tuple(entry.variable.shape)})."
            )
    for entry in table:
        if entry.key in tensors:
            entry.variable.assign(entry.to_keras(np.asarray(tensors[entry.key], dtype=np.float32)))
    return sorted(expected & optional - set(tensors))


def export(table: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """The checkpoint tensors of ``table``'s variables, float32, in the checkpoint's layouts."""
    return {entry.key: entry.to_file() for entry in table}


def _some(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
