"""Dense networks (multi-layer perceptrons) for classification of flat or image inputs."""

from __future__ import annotations

import math

import keras
from keras import layers

from bigkeras import checks
from bigkeras.registry import register_family

PRESETS = {
    "mlp_mnist": {"input_shape": (28, 28), "num_classes": 10, "hidden_units": (512, 256), "dropout": 0.2},
    "tiny": {"input_shape": (8, 8), "num_classes": 3, "hidden_units": (16,), "dropout": 0.0},
}


def mlp(
    *,
    input_shape,
    num_classes: int,
    hidden_units=(512, 256),
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    name: str = "mlp",
) -> keras.Model:
    """A multi-layer perceptron: flatten, ``Dense`` blocks, then a logits layer.

    Args:
        input_shape: tuple, the shape of one example (any rank, fixed sizes); flattened first.
        num_classes: int, the number of classes (width of the ``logits`` output).
        hidden_units: sequence of int, widths of the hidden layers. Default ``(512, 256)``.
        activation: str, a Keras activation name. Default ``"relu"``.
        dropout: float in [0, 1), dropout after each hidden layer. Default 0.
        batch_norm: bool, batch normalisation before each activation. Default False.
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``(batch, *input_shape)`` floats to
        ``(batch, num_classes)`` logits.

    Example:
        >>> model = mlp(input_shape=(28, 28), num_classes=10, hidden_units=(256,))
    """
    input_shape = checks.shape("input_shape", input_shape, rank=range(1, 5))
    if None in input_shape:
        raise ValueError(f"`input_shape` must have fixed sizes for an MLP, got {input_shape!r}.")
    checks.positive_int("num_classes", num_classes)
    hidden_units = checks.positive_ints("hidden_units", hidden_units)
    checks.fraction("dropout", dropout)

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = layers.Reshape((math.prod(input_shape),), name=f"{name}_flatten")(inputs)
    for i, units in enumerate(hidden_units):
        x = layers.Dense(units, use_bias=not batch_norm, name=f"{name}_dense{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_dense{i}_bn")(x)
        x = layers.Activation(activation, name=f"{name}_dense{i}_{activation}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_dense{i}_dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


register_family("mlp", mlp, PRESETS)
