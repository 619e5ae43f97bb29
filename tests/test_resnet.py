"""ResNet v1/v2: exact parity with keras.applications and torchvision, the CIFAR ResNets,
a forward-pass equivalence with keras' own blocks, and argument errors.

The shared checks on ``resnet_tiny`` (basic v1, CIFAR stem) run in tests/test_registry.py;
here they run on the other corner (bottleneck v2, ImageNet stem, variable image size).
"""

import keras
import numpy as np
import pytest
from keras.src.applications import resnet as keras_resnet

from bigkeras import build
from bigkeras.models.resnet import resnet
from tests.helpers import assert_close, check_model, perturbed_weights


def _weight_shapes(model):
    return [tuple(w.shape) for w in model.weights]


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "preset, reference, expected",
    [
        ("resnet50", keras.applications.ResNet50, 25_636_712),
        # ~5 s per build on 2 cores: the deep ones are marked slow.
        pytest.param("resnet101", keras.applications.ResNet101, 44_707_176, marks=pytest.mark.slow),
        pytest.param("resnet152", keras.applications.ResNet152, 60_419_944, marks=pytest.mark.slow),
        ("resnet50v2", keras.applications.ResNet50V2, 25_613_800),
    ],
)
def test_imagenet_presets_match_keras_applications(preset, reference, expected):
    # Build only, no forward pass: these are the full 224x224, 1000-class models.
    ref = reference(weights=None)
    ref_shapes = _weight_shapes(ref)
    assert ref.count_params() == expected
    del ref
    keras.backend.clear_session()

    ours = build(preset)
    assert ours.count_params() == expected
    # The same weights, in the same order: layer for layer the same architecture.
    assert _weight_shapes(ours) == ref_shapes


@pytest.mark.parametrize("preset, expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672)])
def test_basic_block_presets_match_torchvision(preset, expected):
    # torchvision's figures count trainable parameters (BN running stats are buffers there).
    assert _trainable_count(build(preset)) == expected


@pytest.mark.parametrize(
    "preset, n, paper", [("resnet20", 3, 0.27e6), ("resnet32", 5, 0.46e6), ("resnet56", 9, 0.85e6)]
)
def test_cifar_resnets_match_the_paper(preset, n, paper):
    model = build(preset)
    # Option B projections add ~1-2% over the paper's parameter-free option A.
    assert abs(_trainable_count(model) - paper) / paper < 0.03
    # Depth 6n + 2: 6n + 1 convs on the main path (shortcut projections aside) plus the logits.
    main_convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and "shortcut" not in l.name]
    assert len(main_convs) == 6 * n + 1
    # 32x32 -> 32, 16, 8 over the three stages of 16, 32, 64 filters.
    assert tuple(model.get_layer(f"resnet_stage3_block{n}_out").output.shape) == (None, 8, 8, 64)


@pytest.mark.parametrize("preact", [False, True])
def test_same_function_as_keras_applications_blocks(preact):
    # A two-stage ResNet from keras' own stem and stack functions, against ours with copied
    # (perturbed) weights: equal outputs check strides, padding, biases and BN epsilon.
    if preact:
        def stack_fn(x):
            x = keras_resnet.stack_residual_blocks_v2(x, 64, 2, name="conv2")
            return keras_resnet.stack_residual_blocks_v2(x, 128, 2, stride1=1, name="conv3")
    else:
        def stack_fn(x):
            x = keras_resnet.stack_residual_blocks_v1(x, 64, 2, stride1=1, name="conv2")
            return keras_resnet.stack_residual_blocks_v1(x, 128, 2, name="conv3")

    ref = keras_resnet.ResNet(
        stack_fn, preact, True, weights=None, input_shape=(64, 64, 3), classes=5, classifier_activation=None
    )
    ours = resnet(
        input_shape=(64, 64, 3), num_classes=5, stage_blocks=(2, 2), preact=preact, use_bias=not preact
    )
    assert _weight_shapes(ours) == _weight_shapes(ref)

    weights = perturbed_weights(ref)
    ref.set_weights(weights)
    ours.set_weights(weights)
    images = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype("float32")
    expected = np.asarray(ref(images, training=False))
    assert_close(np.asarray(ours(images, training=False)), expected, atol=1e-4, rtol=1e-4)


def test_preact_bottleneck_passes_shared_checks():
    model = resnet(
        input_shape=(None, None, 3), num_classes=4, block="bottleneck", stage_blocks=(1, 1),
        width=4, preact=True, stem="imagenet", name="tiny_v2",
    )  # fmt: skip
    check_model(model, expected_output_shape=(4,))
    assert all(l.name.startswith("tiny_v2_") for l in model.layers if l.name not in ("images", "logits"))


def test_grayscale_input():
    model = build("resnet20", input_shape=(28, 28, 1))
    assert tuple(model.get_layer("resnet_stem_conv").kernel.shape) == (3, 3, 1, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stage_blocks": (3, -1)}, r"stage_blocks\[1\]"),
        ({"stage_blocks": ()}, "stage_blocks"),
        ({"block": "wide"}, "block.*'basic', 'bottleneck'"),
        ({"stem": "tiny"}, "stem"),
        ({"width": 0}, "width"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_shape": (224, 224)}, "input_shape.*rank 3"),
        ({"input_shape": (16, 16, 3)}, "input_shape.*at least 32"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    args = {"input_shape": (224, 224, 3), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        resnet(**args)
