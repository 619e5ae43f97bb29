"""Inception-v3 (exact parity with keras.applications, in weights and in function), the small
Inception of Zhang et al. 2017 (its published parameter count), and argument errors.

The shared checks on ``inception_tiny`` and ``inception_v3_tiny`` run in tests/test_registry.py.
"""

import keras
import numpy as np
import pytest

from bigkeras import build
from bigkeras.models.inception import inception_small, inception_v3
from tests.helpers import assert_close, perturbed_weights


def _weight_shapes(model):
    return [tuple(w.shape) for w in model.weights]


def test_inception_v3_matches_keras_applications():
    # The parameter count does not depend on the image size, so both models are built at the
    # smallest input (75x75): the count and weight list are those of the 299x299 model, and a
    # forward pass is cheap.
    ref = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classifier_activation=None)
    ours = build("inception_v3", input_shape=(75, 75, 3))
    assert ref.count_params() == ours.count_params() == 23_851_784
    assert _weight_shapes(ours) == _weight_shapes(ref)  # same layers, same order

    # Copied, perturbed weights give the same logits: padding, strides, branch order and BN
    # settings all agree, not just the shapes.
    weights = perturbed_weights(ref)
    ref.set_weights(weights)
    ours.set_weights(weights)
    images = np.random.default_rng(1).standard_normal((2, 75, 75, 3)).astype("float32")
    expected = np.asarray(ref(images, training=False))
    assert_close(np.asarray(ours(images, training=False)), expected, atol=1e-4, rtol=1e-4)


def test_inception_v3_default_input_is_299():
    model = inception_v3()
    assert tuple(model.input.shape) == (None, 299, 299, 3)
    assert tuple(model.get_layer("inception_v3_mixed10").output.shape) == (None, 8, 8, 2048)


def test_inception_small_matches_the_paper():
    model = build("inception_small")
    # Zhang et al. 2017, table 1: 1,649,402 parameters (trainable; Keras also counts BN's
    # moving statistics, 2 per channel).
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 1_649_402
    # 28x28 -> 14 -> 7 at the two downsample modules; the last module outputs 176 + 160 channels.
    assert tuple(model.get_layer("inception_small_group3_module2_concat").output.shape) == (None, 7, 7, 336)


def test_inception_small_takes_grayscale_and_json_lists():
    model = inception_small(
        input_shape=(28, 28, 1), num_classes=4, stem_filters=8, blocks=[[[4, 4]], [[4, 4], [8, 4]]],
        downsample_filters=[8], name="gray",
    )  # fmt: skip
    assert tuple(model.get_layer("gray_stem_conv").kernel.shape) == (3, 3, 1, 8)
    # The downsample module concatenates its conv (8) with the pooled input (4 + 4).
    assert tuple(model.get_layer("gray_group2_downsample_concat").output.shape) == (None, 14, 14, 16)
    assert all(l.name.startswith("gray_") for l in model.layers if l.name not in ("images", "logits"))


def test_depth_multiplier_thins_every_conv():
    model = build("inception_v3_tiny")
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    # One module per grid: stem 5 + A 7 + reduction 4 + 7x7 module 10 + reduction 6 + E 9.
    assert len(convs) == 41
    # 0.05 x the full widths (32 ... 448) with a floor of min_depth=4.
    assert {l.filters for l in convs} <= set(range(4, 23))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (74, 74, 3)}, "input_shape.*at least 75"),
        ({"input_shape": (299, 299)}, "input_shape.*rank 3"),
        ({"depth_multiplier": 0}, "depth_multiplier"),
        ({"min_depth": -1}, "min_depth"),
        ({"grid17_widths": (128, 0)}, r"grid17_widths\[1\]"),
        ({"grid8_modules": 0}, "grid8_modules"),
    ],
)
def test_inception_v3_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inception_v3(**{"num_classes": 10, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blocks": []}, "blocks"),
        ({"blocks": [[[4, 4]], []]}, r"blocks\[1\]"),
        ({"blocks": [[[4, 4, 4]]], "downsample_filters": ()}, r"blocks\[0\]\[0\].*pair"),
        ({"blocks": [[[4, -4]]], "downsample_filters": ()}, r"blocks\[0\]\[0\]\[1\]"),
        ({"downsample_filters": (80,)}, "downsample_filters.*one entry per gap"),
        ({"stem_filters": 0}, "stem_filters"),
        ({"input_shape": (32, 32)}, "input_shape.*rank 3"),
    ],
)
def test_inception_small_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inception_small(**{"input_shape": (32, 32, 3), "num_classes": 10, **kwargs})
