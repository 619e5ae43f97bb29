"""Plain convolutional networks: stacks of conv blocks with max-pooling and a dense head.

One builder covers both a small Fashion-MNIST classifier and VGG (Simonyan & Zisserman 2014,
"Very Deep Convolutional Networks for Large-Scale Image Recognition"): VGG is this network with
wide blocks, no batch norm and two 4096-unit hidden layers. The ``vgg16`` and ``vgg19`` presets
have exactly the weights of ``keras.applications.VGG16/VGG19(weights=None)`` (138,357,544 and
143,667,240 parameters with the 1000-class top).
"""

from __future__ import annotations

import keras
from keras import layers

from bigkeras import checks
from bigkeras.registry import register_family

_VGG = {"filters": (64, 128, 256, 512, 512), "dense_units": (4096, 4096), "batch_norm": False}

PRESETS = {
    # Two double-conv blocks with BN: 28 -> 14 -> 7, then a 128-unit hidden layer.
    "cnn_fashion_mnist": {
        "input_shape": (28, 28, 1),
        "num_classes": 10,
        "filters": (32, 64),
        "convs_per_block": 2,
        "dense_units": (128,),
        "dropout": 0.3,
        "batch_norm": True,
    },
    # Dropout 0.5 after fc1 and fc2 as in the paper; keras.applications leaves it out (it has
    # no weights, so the parameter sets are identical).
    "vgg16": {
        **_VGG,
        "input_shape": (224, 224, 3),
        "num_classes": 1000,
        "convs_per_block": (2, 2, 3, 3, 3),
        "dropout": 0.5,
    },
    "vgg19": {
        **_VGG,
        "input_shape": (224, 224, 3),
        "num_classes": 1000,
        "convs_per_block": (2, 2, 4, 4, 4),
        "dropout": 0.5,
    },
    "tiny": {
        "input_shape": (12, 12, 1),
        "num_classes": 3,
        "filters": (4, 8),
        "convs_per_block": 1,
        "dense_units": (8,),
        "dropout": 0.0,
        "batch_norm": True,
    },
}


def cnn(
    *,
    input_shape,
    num_classes: int,
    filters=(32, 64),
    convs_per_block=2,
    dense_units=(128,),
    dropout: float = 0.0,
    batch_norm: bool = True,
    head: str = "flatten",
    include_top: bool = True,
    name: str = "cnn",
) -> keras.Model:
    """A plain conv net: blocks of 3x3 convs, each block ending in a 2x2 max-pool, then a dense head.

    Block ``i`` has ``convs_per_block[i]`` convs of ``filters[i]`` channels, each conv followed by
    batch norm (when ``batch_norm``; the conv then has no bias) and ReLU. The head flattens (or
    global-average-pools) the last feature map, applies the hidden ``Dense`` layers with ReLU and
    dropout after each, and ends in the ``logits`` layer.

    Args:
        input_shape: tuple ``(height, width, channels)``; grayscale is ``channels=1``.
            Height and width may be ``None`` only with ``head="avg"`` or without the top.
        num_classes: int, width of the ``logits`` output; ignored without the top.
        filters: sequence of int, channels of each conv block. Default ``(32, 64)``.
        convs_per_block: int, or one int per block. Default 2.
        dense_units: sequence of int, hidden layer widths of the head; may be empty.
            Default ``(128,)``.
        dropout: float in [0, 1), dropout after each hidden dense layer (before the logits
            when there is none). Default 0.
        batch_norm: bool, batch normalisation after each conv. Default True.
        head: ``"flatten"`` (VGG) or ``"avg"`` (global average pooling). Default ``"flatten"``.
        include_top: bool, end in the dense head and ``logits``; without it the model returns
            the last block's pooled feature map, as keras.applications' VGG with
            ``include_top=False`` does. Default True.
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``images`` ``(batch, *input_shape)`` to
        ``logits`` ``(batch, num_classes)``, or to features ``(batch, h, w, filters[-1])``
        without the top.

    Example:
        >>> model = cnn(input_shape=(28, 28, 1), num_classes=10, filters=(32, 64), dropout=0.3)
    """
    input_shape = checks.shape("input_shape", input_shape, rank=3, channels=True)
    checks.one_of("include_top", include_top, (True, False))
    if include_top:
        checks.positive_int("num_classes", num_classes)
    filters = checks.positive_ints("filters", filters)
    if isinstance(convs_per_block, int) and not isinstance(convs_per_block, bool):
        convs_per_block = (convs_per_block,) * len(filters)
    convs_per_block = checks.positive_ints("convs_per_block", convs_per_block)
    if len(convs_per_block) != len(filters):
        raise ValueError(
            f"`convs_per_block` must be an int or have one entry per block of `filters` "
            f"({len(filters)}), got {convs_per_block!r}."
        )
    dense_units = checks.positive_ints("dense_units", dense_units) if _nonempty(dense_units) else ()
    checks.fraction("dropout", dropout)
    checks.one_of("batch_norm", batch_norm, (True, False))
    checks.one_of("head", head, ("flatten", "avg"))
    if include_top and head == "flatten" and None in input_shape[:2]:
        raise ValueError(
            f"`input_shape` must have a fixed height and width with head='flatten', got "
            f"{input_shape!r}; use head='avg' for variable-size images."
        )
    # Each block's 2x2 max-pool floors the side; a side that reaches 0 breaks the graph.
    checks.min_side("input_shape", input_shape, 2 ** len(filters), f"{len(filters)} pooling blocks halve it")

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, (block_filters, convs) in enumerate(zip(filters, convs_per_block), start=1):
        prefix = f"{name}_block{i}"
        for j in range(1, convs + 1):
            x = layers.Conv2D(
                block_filters, 3, padding="same", use_bias=not batch_norm, name=f"{prefix}_conv{j}"
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"{prefix}_bn{j}")(x)
            x = layers.Activation("relu", name=f"{prefix}_relu{j}")(x)
        x = layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)  # (batch, h/2, w/2, filters)

    if not include_top:
        return keras.Model(inputs, x, name=name)
    if head == "flatten":
        x = layers.Flatten(name=f"{name}_flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name=f"{name}_avg_pool")(x)
    for k, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", name=f"{name}_fc{k}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name}_fc{k}_dropout")(x)
    if dropout and not dense_units:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


def _nonempty(values) -> bool:
    # An empty sequence means "no hidden layers"; anything else goes to the checks.
    return not (isinstance(values, (tuple, list)) and len(values) == 0)


register_family("cnn", cnn, PRESETS)
