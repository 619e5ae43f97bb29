"""Residual networks: ResNet v1 and v2 (pre-activation) with basic or bottleneck blocks.

He et al. 2015, "Deep Residual Learning for Image Recognition" (v1, and the CIFAR ResNets of
its section 4.2); He et al. 2016, "Identity Mappings in Deep Residual Networks" (v2).

The ImageNet presets match their references parameter for parameter, with 1000 classes:
``resnet50/101/152`` and ``resnet50v2/101v2/152v2`` match ``keras.applications`` (same block
structure, strides, biases and BN epsilon), ``resnet18/34`` match torchvision and the paper.
The CIFAR presets ``resnet20/32/44/56/110`` use 3 stages of n basic blocks with 16/32/64
filters and projection shortcuts where the width changes (the paper's option B; its CIFAR
figures are for option A, which has no parameters: ours are 1-3% larger).
"""

from __future__ import annotations

import keras
from keras import layers

from bigkeras import checks
from bigkeras.registry import register_family

_BN_EPSILON = 1.001e-5  # keras.applications' ResNet value
_EXPANSION = {"basic": 1, "bottleneck": 4}  # block output channels / block filters
_STEM_STRIDE = {"imagenet": 4, "cifar": 1}

_IMAGENET = {"input_shape": (224, 224, 3), "num_classes": 1000, "stem": "imagenet", "width": 64}
_CIFAR = {"input_shape": (32, 32, 3), "num_classes": 10, "stem": "cifar", "width": 16, "block": "basic"}


def _imagenet(block, stage_blocks, preact=False, use_bias=False):
    return {**_IMAGENET, "block": block, "stage_blocks": stage_blocks, "preact": preact, "use_bias": use_bias}


PRESETS = {
    # torchvision / paper: no conv biases.
    "resnet18": _imagenet("basic", (2, 2, 2, 2)),
    "resnet34": _imagenet("basic", (3, 4, 6, 3)),
    # keras.applications v1 keeps a bias in every conv, although BN's beta makes it redundant.
    "resnet50": _imagenet("bottleneck", (3, 4, 6, 3), use_bias=True),
    "resnet101": _imagenet("bottleneck", (3, 4, 23, 3), use_bias=True),
    "resnet152": _imagenet("bottleneck", (3, 8, 36, 3), use_bias=True),
    "resnet50v2": _imagenet("bottleneck", (3, 4, 6, 3), preact=True),
    "resnet101v2": _imagenet("bottleneck", (3, 4, 23, 3), preact=True),
    "resnet152v2": _imagenet("bottleneck", (3, 8, 36, 3), preact=True),
    # CIFAR-10: depth 6n + 2.
    **{f"resnet{6 * n + 2}": {**_CIFAR, "stage_blocks": (n, n, n)} for n in (3, 5, 7, 9, 18)},
    "tiny": {"input_shape": (16, 16, 3), "num_classes": 3, "block": "basic", "stage_blocks": (1, 1),
             "width": 4, "stem": "cifar"},  # fmt: skip
}


def resnet(
    *,
    input_shape,
    num_classes: int,
    block: str = "bottleneck",
    stage_blocks=(3, 4, 6, 3),
    width: int = 64,
    preact: bool = False,
    stem: str = "imagenet",
    use_bias: bool = False,
    include_top: bool = True,
    name: str = "resnet",
) -> keras.Model:
    """A ResNet: a stem, stages of residual blocks, global average pooling and ``logits``.

    Stage ``i`` (from 0) has ``stage_blocks[i]`` blocks of ``width * 2**i`` filters; a
    bottleneck block outputs 4x its filters. v1 (``preact=False``) downsamples in the first
    block of every stage but the first, with the stride on the block's first conv (as
    keras.applications does for bottlenecks; torchvision puts it on the 3x3, same parameters).
    v2 (``preact=True``) follows keras.applications: BN-ReLU before each block, the stride in the
    last block of every stage but the last, and a final BN-ReLU. A shortcut is a 1x1 projection
    where the channel count changes, a 1x1 max-pool where only the stride does, else identity.

    Args:
        input_shape: tuple ``(height, width, channels)``; height and width may be ``None``.
        num_classes: int, width of the ``logits`` output; ignored without the top.
        block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1). Default
            ``"bottleneck"``.
        stage_blocks: sequence of int, blocks per stage. Default ``(3, 4, 6, 3)`` (ResNet-50).
        width: int, filters of the stem and of the first stage. Default 64.
        preact: bool, pre-activation blocks (ResNet v2). Default False.
        stem: ``"imagenet"`` (7x7/2 conv, 3x3/2 max-pool) or ``"cifar"`` (one 3x3 conv).
            Default ``"imagenet"``.
        use_bias: bool, biases in the convs that feed a batch norm (redundant with its beta;
            keras.applications' v1 has them). Convs not followed by BN always have a bias.
            Default False.
        include_top: bool, end in pooling and ``logits``; without it the model returns the
            last feature map (after v2's final BN-ReLU), as keras.applications'
            ``include_top=False`` does. Default True.
        name: str, the model name and layer-name prefix.

    Returns:
        A functional ``keras.Model`` mapping ``images`` ``(batch, *input_shape)`` to
        ``logits`` ``(batch, num_classes)``, or to features ``(batch, h, w, channels)``
        without the top.

    Example:
        >>> model = resnet(input_shape=(32, 32, 3), num_classes=10, block="basic",
        ...                stage_blocks=(3, 3, 3), width=16, stem="cifar")  # ResNet-20
    """
    input_shape = checks.shape("input_shape", input_shape, rank=3, channels=True)
    checks.one_of("include_top", include_top, (True, False))
    if include_top:
        checks.positive_int("num_classes", num_classes)
    checks.one_of("block", block, tuple(_EXPANSION))
    stage_blocks = checks.positive_ints("stage_blocks", stage_blocks)
    checks.positive_int("width", width)
    checks.one_of("preact", preact, (True, False))
    checks.one_of("stem", stem, tuple(_STEM_STRIDE))
    checks.one_of("use_bias", use_bias, (True, False))
    # Strided layers round sizes up, so nothing breaks below this; like keras.applications we
    # still refuse inputs smaller than the total stride (the last stage would see < 1 pixel).
    total_stride = _STEM_STRIDE[stem] * 2 ** (len(stage_blocks) - 1)
    checks.min_side("input_shape", input_shape, total_stride, f"this ResNet downsamples by {total_stride}x")

    inputs = keras.Input(shape=input_shape, name="images")
    x = _stem(inputs, width, kind=stem, preact=preact, use_bias=use_bias, name=f"{name}_stem")
    last = len(stage_blocks)
    for i, blocks in enumerate(stage_blocks, start=1):
        for j in range(1, blocks + 1):
            if preact:
                stride = 2 if j == blocks and i < last else 1
            else:
                stride = 2 if j == 1 and i > 1 else 1
            x = _residual_block(
                x, width * 2 ** (i - 1), stride, kind=block, preact=preact, use_bias=use_bias,
                name=f"{name}_stage{i}_block{j}",
            )  # fmt: skip
    if preact:  # v2 blocks end on an addition: normalise once before pooling.
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_post_bn")(x)
        x = layers.Activation("relu", name=f"{name}_post_relu")(x)
    if not include_top:  # (batch, h, w, channels)
        return keras.Model(inputs, x, name=name)
    x = layers.GlobalAveragePooling2D(name=f"{name}_avg_pool")(x)  # (batch, channels)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inputs, logits, name=name)


def _stem(x, filters, *, kind, preact, use_bias, name):
    if kind == "imagenet":
        # A 7x7/2 conv and a 3x3/2 max-pool: (224, 224) -> (56, 56).
        x = _conv(x, filters, 7, 2, use_bias=use_bias or preact, name=f"{name}_conv")
    else:
        x = _conv(x, filters, 3, 1, use_bias=use_bias or preact, name=f"{name}_conv")
    if not preact:  # v2 normalises at the start of each block instead.
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
    if kind == "imagenet":
        x = layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    return x


def _residual_block(x, filters, stride, *, kind, preact, use_bias, name):
    """One residual block: ``shortcut(x) + residual(x)``, v1 or v2, basic or bottleneck."""
    out_channels = filters * _EXPANSION[kind]
    # (filters, kernel, stride) of each conv of the residual branch.
    if kind == "basic":
        convs = [(filters, 3, stride), (filters, 3, 1)]
    elif preact:  # keras.applications v2: the stride on the 3x3.
        convs = [(filters, 1, 1), (filters, 3, stride), (out_channels, 1, 1)]
    else:  # keras.applications v1: the stride on the first 1x1.
        convs = [(filters, 1, stride), (filters, 3, 1), (out_channels, 1, 1)]

    if preact:
        r = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_preact_bn")(x)
        r = layers.Activation("relu", name=f"{name}_preact_relu")(r)
    else:
        r = x
    # v2 projects the normalised input, v1 the raw one; identity paths always carry the raw x.
    shortcut = _shortcut(r if preact else x, x, out_channels, stride, preact=preact,
                         use_bias=use_bias, name=f"{name}_shortcut")  # fmt: skip

    for k, (conv_filters, kernel, conv_stride) in enumerate(convs, start=1):
        final = k == len(convs)
        # v2's last conv feeds the addition, not a BN: it keeps its bias.
        bias = use_bias or (preact and final)
        r = _conv(r, conv_filters, kernel, conv_stride, use_bias=bias, name=f"{name}_conv{k}")
        if final and preact:
            break
        r = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn{k}")(r)
        if not final:
            r = layers.Activation("relu", name=f"{name}_relu{k}")(r)

    x = layers.Add(name=f"{name}_add")([shortcut, r])
    if not preact:
        x = layers.Activation("relu", name=f"{name}_out")(x)
    return x


def _shortcut(source, x, channels, stride, *, preact, use_bias, name):
    """The shortcut path: project ``source`` if the width changes, else subsample ``x``."""
    if x.shape[-1] != channels:
        s = _conv(source, channels, 1, stride, use_bias=use_bias or preact, name=f"{name}_conv")
        if not preact:
            s = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(s)
        return s
    if stride > 1:  # A strided 1x1 max-pool just subsamples, like the residual branch.
        return layers.MaxPooling2D(1, strides=stride, name=f"{name}_pool")(x)
    return x


def _conv(x, filters, kernel, stride, *, use_bias, name):
    """A conv whose output side is ``ceil(side / stride)``, padded symmetrically when strided."""
    if stride > 1 and kernel > 1:
        # Explicit symmetric padding, as the reference implementations do; TF's "same" would
        # pad only after the image for even sides.
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=use_bias, name=name)(x)


register_family("resnet", resnet, PRESETS)
