"""Inception networks: Inception-v3 and the small Inception for 28x28 / 32x32 images.

- ``inception_v3``: Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer
  Vision". At ``depth_multiplier=1`` it has exactly the weights of
  ``keras.applications.InceptionV3(weights=None)`` (23,851,784 parameters with 1000 classes);
  smaller multipliers thin every conv as TF-slim's ``inception_v3`` does.
- ``inception_small``: the small Inception of Zhang et al. 2017, "Understanding deep learning
  requires rethinking generalization" (appendix A, figure 3), for CIFAR-size images.

Two families: ``inception`` (presets ``inception_small``, ``inception_tiny``) and
``inception_v3`` (presets ``inception_v3``, ``inception_v3_tiny``).
"""

from __future__ import annotations

import keras
from keras import layers

from bigkeras import checks
from bigkeras.registry import register_family

# Inception-v3's valid-padded strided convs and pools shrink 75 -> 37 -> 35 -> 17 -> 15 -> 7
# -> 3 -> 1 (keras.applications' own minimum); below 75 a feature map reaches size 0.
_V3_MIN_SIDE = 75

# (ch1x1, ch3x3) of each inception module, per resolution; a downsample module sits between.
_ZHANG_BLOCKS = (
    ((32, 32), (32, 48)),
    ((112, 48), (96, 64), (80, 80), (48, 96)),
    ((176, 160), (176, 160)),
)

PRESETS = {
    # Zhang et al. train it on 28x28 centre crops of CIFAR-10.
    "inception_small": {
        "input_shape": (28, 28, 3),
        "num_classes": 10,
        "stem_filters": 96,
        "blocks": _ZHANG_BLOCKS,
        "downsample_filters": (80, 96),
    },
    "tiny": {
        "input_shape": (16, 16, 3),
        "num_classes": 3,
        "stem_filters": 8,
        "blocks": (((4, 4),), ((4, 8),)),
        "downsample_filters": (8,),
    },
}

V3_PRESETS = {
    "inception_v3": {"input_shape": (299, 299, 3), "num_classes": 1000},
    # One module per grid (41 convs, not 94): tracing a training step costs ~0.1 s per layer.
    "tiny": {
        "input_shape": (75, 75, 3),
        "num_classes": 3,
        "grid35_pool_filters": (32,),
        "grid17_widths": (128,),
        "grid8_modules": 1,
        "depth_multiplier": 0.05,
        "min_depth": 4,
    },
}


def inception_v3(
    *,
    input_shape=(299, 299, 3),
    num_classes: int = 1000,
    grid35_pool_filters=(32, 64, 64),
    grid17_widths=(128, 160, 160, 192),
    grid8_modules: int = 2,
    depth_multiplier: float = 1.0,
    min_depth: int = 16,
    include_top: bool = True,
    name: str = "inception_v3",
) -> keras.Model:
    """Inception-v3: a conv stem, 11 mixed modules, global average pooling and ``logits``.

    The mixed modules, in keras.applications' names: ``mixed0-2`` at 35x35 (5x5 and double 3x3
    branches), the ``mixed3`` reduction, ``mixed4-7`` at 17x17 (7x7 convs factorised into 1x7
    and 7x1), the ``mixed8`` reduction, ``mixed9-10`` at 8x8 (3x3 convs split into 1x3 and 3x1).
    Every conv is conv (no bias) -> BN (no scale) -> ReLU. The module counts are arguments only
    so that a test-sized variant (one module per grid) exists; the defaults are the paper's.

    Args:
        input_shape: tuple ``(height, width, channels)``, height and width at least 75 (or
            ``None``). Default ``(299, 299, 3)``.
        num_classes: int, width of the ``logits`` output; ignored without the top.
            Default 1000.
        grid35_pool_filters: sequence of int, one 35x35 module per entry, the filters of its
            pooled branch. Default ``(32, 64, 64)``.
        grid17_widths: sequence of int, one 17x17 module per entry, the filters inside its
            7x7 branches. Default ``(128, 160, 160, 192)``.
        grid8_modules: int, the number of 8x8 modules. Default 2.
        depth_multiplier: float > 0, scales the filters of every conv. Default 1.
        min_depth: int, the fewest filters a conv keeps when ``depth_multiplier < 1``. Default 16.
        include_top: bool, end in pooling and ``logits``; without it the model returns the
            last module's feature map, as keras.applications' ``include_top=False`` does.
            Default True.
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``images`` ``(batch, *input_shape)`` to
        ``logits`` ``(batch, num_classes)``, or to features ``(batch, h, w, 2048)`` without
        the top.

    Example:
        >>> model = inception_v3(input_shape=(299, 299, 3), num_classes=1000)  # 23,851,784 params
    """
    input_shape = checks.shape("input_shape", input_shape, rank=3, channels=True)
    checks.one_of("include_top", include_top, (True, False))
    if include_top:
        checks.positive_int("num_classes", num_classes)
    checks.positive_number("depth_multiplier", depth_multiplier)
    checks.positive_int("min_depth", min_depth)
    grid35_pool_filters = checks.positive_ints("grid35_pool_filters", grid35_pool_filters)
    grid17_widths = checks.positive_ints("grid17_widths", grid17_widths)
    checks.positive_int("grid8_modules", grid8_modules)
    checks.min_side("input_shape", input_shape, _V3_MIN_SIDE, "Inception-v3's valid-padded reductions shrink it 75 -> 1")

    def d(filters):  # TF-slim's depth(): thin every conv, but keep at least min_depth filters.
        return filters if depth_multiplier == 1 else max(int(filters * depth_multiplier), min_depth)

    inputs = keras.Input(shape=input_shape, name="images")
    # Stem: (299, 299, 3) -> (35, 35, 192).
    x = _conv_bn(inputs, d(32), 3, strides=2, padding="valid", name=f"{name}_stem_conv1")
    x = _conv_bn(x, d(32), 3, padding="valid", name=f"{name}_stem_conv2")
    x = _conv_bn(x, d(64), 3, name=f"{name}_stem_conv3")
    x = layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool1")(x)
    x = _conv_bn(x, d(80), 1, padding="valid", name=f"{name}_stem_conv4")
    x = _conv_bn(x, d(192), 3, padding="valid", name=f"{name}_stem_conv5")
    x = layers.MaxPooling2D(3, strides=2, name=f"{name}_stem_pool2")(x)

    # Modules are numbered on, as keras.applications' mixed0..mixed10.
    index = iter(range(len(grid35_pool_filters) + len(grid17_widths) + grid8_modules + 2))
    for pool_filters in grid35_pool_filters:  # (35, 35, 256 or 288)
        x = _module_a(x, d, d(pool_filters), name=f"{name}_mixed{next(index)}")
    x = _reduction_a(x, d, name=f"{name}_mixed{next(index)}")  # (17, 17, 768)
    for width in grid17_widths:  # (17, 17, 768)
        x = _module_c(x, d, d(width), name=f"{name}_mixed{next(index)}")
    x = _reduction_b(x, d, name=f"{name}_mixed{next(index)}")  # (8, 8, 1280)
    for _ in range(grid8_modules):  # (8, 8, 2048)
        x = _module_e(x, d, name=f"{name}_mixed{next(index)}")

    if not include_top:  # (batch, h, w, 2048)
        return keras.Model(inputs, x, name=name)
    x = layers.GlobalAveragePooling2D(name=f"{name}_avg_pool")(x)  # (batch, 2048)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


def inception_small(
    *,
    input_shape,
    num_classes: int,
    stem_filters: int = 96,
    blocks=_ZHANG_BLOCKS,
    downsample_filters=(80, 96),
    name: str = "inception_small",
) -> keras.Model:
    """The small Inception of Zhang et al. 2017: 1,649,402 trainable parameters, as in its table 1.

    A 3x3 conv module, then groups of inception modules (a 1x1 and a 3x3 conv module,
    concatenated) with a downsample module (a 3x3/2 conv module next to a 3x3/2 max-pool) between
    groups, global average pooling and ``logits``. Every conv module is conv -> BN -> ReLU, with
    no conv bias and no BN scale, as in Inception-v3.

    Args:
        input_shape: tuple ``(height, width, channels)``; height and width may be ``None``.
        num_classes: int, width of the ``logits`` output.
        stem_filters: int, filters of the first conv module. Default 96.
        blocks: sequence of groups, each a sequence of ``(ch1x1, ch3x3)`` inception modules.
            Default: the paper's ``2 + 4 + 2`` modules.
        downsample_filters: sequence of int, the conv filters of each downsample module, one
            fewer than ``blocks``. Default ``(80, 96)``.
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``images`` ``(batch, *input_shape)`` to
        ``logits`` ``(batch, num_classes)``.

    Example:
        >>> model = inception_small(input_shape=(32, 32, 3), num_classes=10)
    """
    input_shape = checks.shape("input_shape", input_shape, rank=3, channels=True)
    checks.positive_int("num_classes", num_classes)
    checks.positive_int("stem_filters", stem_filters)
    blocks = _check_blocks(blocks)
    downsample_filters = checks.positive_ints("downsample_filters", downsample_filters) if blocks[1:] else ()
    if len(downsample_filters) != len(blocks) - 1:
        raise ValueError(
            f"`downsample_filters` must have one entry per gap between `blocks` groups "
            f"({len(blocks) - 1}), got {downsample_filters!r}."
        )

    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv_bn(inputs, stem_filters, 3, name=f"{name}_stem")
    for g, group in enumerate(blocks, start=1):
        if g > 1:  # (h, w) -> (ceil(h/2), ceil(w/2))
            x = _downsample(x, downsample_filters[g - 2], name=f"{name}_group{g}_downsample")
        for m, (ch1, ch3) in enumerate(group, start=1):
            prefix = f"{name}_group{g}_module{m}"
            branch1 = _conv_bn(x, ch1, 1, name=f"{prefix}_1x1")
            branch3 = _conv_bn(x, ch3, 3, name=f"{prefix}_3x3")
            x = layers.Concatenate(name=f"{prefix}_concat")([branch1, branch3])
    x = layers.GlobalAveragePooling2D(name=f"{name}_avg_pool")(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


def _check_blocks(blocks) -> list[list[tuple[int, int]]]:
    """``blocks`` as lists of (ch1x1, ch3x3) pairs; lists from JSON are fine."""
    expected = "a non-empty sequence of non-empty groups of (ch1x1, ch3x3) pairs"
    if not _is_sequence(blocks) or not blocks:
        raise ValueError(f"`blocks` must be {expected}, got {blocks!r}.")
    checked = []
    for g, group in enumerate(blocks):
        if not _is_sequence(group) or not group:
            raise ValueError(
                f"`blocks[{g}]` must be a non-empty sequence of (ch1x1, ch3x3) pairs, got {group!r}."
            )
        checked.append([checks.positive_ints(f"blocks[{g}][{m}]", module) for m, module in enumerate(group)])
        for m, module in enumerate(checked[-1]):
            if len(module) != 2:
                raise ValueError(f"`blocks[{g}][{m}]` must be a pair (ch1x1, ch3x3), got {module!r}.")
    return checked


def _is_sequence(value) -> bool:
    return isinstance(value, (tuple, list))


def _conv_bn(x, filters, kernel, strides=1, padding="same", *, name):
    """Conv -> BN -> ReLU, ``kernel`` an int or (rows, cols).

    As in keras.applications, the conv has no bias (BN's beta replaces it) and the BN no scale
    (the ReLU after it is scale-invariant up to the next conv's weights).
    """
    x = layers.Conv2D(
        filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _avg_pool_branch(x, filters, name):
    x = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    return _conv_bn(x, filters, 1, name=name)


def _module_a(x, d, pool_filters, name):
    """35x35 module: 1x1, 5x5, double 3x3 and pooled branches."""
    b1 = _conv_bn(x, d(64), 1, name=f"{name}_b1x1")
    b5 = _conv_bn(x, d(48), 1, name=f"{name}_b5x5_1")
    b5 = _conv_bn(b5, d(64), 5, name=f"{name}_b5x5_2")
    b3 = _conv_bn(x, d(64), 1, name=f"{name}_b3x3dbl_1")
    b3 = _conv_bn(b3, d(96), 3, name=f"{name}_b3x3dbl_2")
    b3 = _conv_bn(b3, d(96), 3, name=f"{name}_b3x3dbl_3")
    bp = _avg_pool_branch(x, pool_filters, name=f"{name}_bpool")
    return layers.Concatenate(name=name)([b1, b5, b3, bp])


def _reduction_a(x, d, name):
    """35x35 -> 17x17: strided 3x3, strided double 3x3 and max-pool branches."""
    b3 = _conv_bn(x, d(384), 3, strides=2, padding="valid", name=f"{name}_b3x3")
    bd = _conv_bn(x, d(64), 1, name=f"{name}_b3x3dbl_1")
    bd = _conv_bn(bd, d(96), 3, name=f"{name}_b3x3dbl_2")
    bd = _conv_bn(bd, d(96), 3, strides=2, padding="valid", name=f"{name}_b3x3dbl_3")
    bp = layers.MaxPooling2D(3, strides=2, name=f"{name}_bpool")(x)
    return layers.Concatenate(name=name)([b3, bd, bp])


def _module_c(x, d, width, name):
    """17x17 module: 7x7 convs factorised into 1x7 and 7x1, ``width`` filters inside."""
    b1 = _conv_bn(x, d(192), 1, name=f"{name}_b1x1")
    b7 = _conv_bn(x, width, 1, name=f"{name}_b7x7_1")
    b7 = _conv_bn(b7, width, (1, 7), name=f"{name}_b7x7_2")
    b7 = _conv_bn(b7, d(192), (7, 1), name=f"{name}_b7x7_3")
    bd = _conv_bn(x, width, 1, name=f"{name}_b7x7dbl_1")
    bd = _conv_bn(bd, width, (7, 1), name=f"{name}_b7x7dbl_2")
    bd = _conv_bn(bd, width, (1, 7), name=f"{name}_b7x7dbl_3")
    bd = _conv_bn(bd, width, (7, 1), name=f"{name}_b7x7dbl_4")
    bd = _conv_bn(bd, d(192), (1, 7), name=f"{name}_b7x7dbl_5")
    bp = _avg_pool_branch(x, d(192), name=f"{name}_bpool")
    return layers.Concatenate(name=name)([b1, b7, bd, bp])


def _reduction_b(x, d, name):
    """17x17 -> 8x8: strided 3x3, 7x7-then-strided-3x3 and max-pool branches."""
    b3 = _conv_bn(x, d(192), 1, name=f"{name}_b3x3_1")
    b3 = _conv_bn(b3, d(320), 3, strides=2, padding="valid", name=f"{name}_b3x3_2")
    b7 = _conv_bn(x, d(192), 1, name=f"{name}_b7x7x3_1")
    b7 = _conv_bn(b7, d(192), (1, 7), name=f"{name}_b7x7x3_2")
    b7 = _conv_bn(b7, d(192), (7, 1), name=f"{name}_b7x7x3_3")
    b7 = _conv_bn(b7, d(192), 3, strides=2, padding="valid", name=f"{name}_b7x7x3_4")
    bp = layers.MaxPooling2D(3, strides=2, name=f"{name}_bpool")(x)
    return layers.Concatenate(name=name)([b3, b7, bp])


def _module_e(x, d, name):
    """8x8 module: 3x3 convs split into parallel 1x3 and 3x1 halves (expanded filter bank)."""
    b1 = _conv_bn(x, d(320), 1, name=f"{name}_b1x1")
    b3 = _conv_bn(x, d(384), 1, name=f"{name}_b3x3_1")
    b3 = layers.Concatenate(name=f"{name}_b3x3_concat")(
        [
            _conv_bn(b3, d(384), (1, 3), name=f"{name}_b3x3_2a"),
            _conv_bn(b3, d(384), (3, 1), name=f"{name}_b3x3_2b"),
        ]
    )
    bd = _conv_bn(x, d(448), 1, name=f"{name}_b3x3dbl_1")
    bd = _conv_bn(bd, d(384), 3, name=f"{name}_b3x3dbl_2")
    bd = layers.Concatenate(name=f"{name}_b3x3dbl_concat")(
        [
            _conv_bn(bd, d(384), (1, 3), name=f"{name}_b3x3dbl_3a"),
            _conv_bn(bd, d(384), (3, 1), name=f"{name}_b3x3dbl_3b"),
        ]
    )
    bp = _avg_pool_branch(x, d(192), name=f"{name}_bpool")
    return layers.Concatenate(name=name)([b1, b3, bd, bp])


def _downsample(x, filters, name):
    """Zhang et al.'s downsample module: a 3x3/2 conv module next to a 3x3/2 max-pool."""
    conv = _conv_bn(x, filters, 3, strides=2, name=f"{name}_conv")
    pool = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([conv, pool])


register_family("inception", inception_small, PRESETS)
register_family("inception_v3", inception_v3, V3_PRESETS)
