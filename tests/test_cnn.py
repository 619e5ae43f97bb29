"""Plain CNNs and VGG: the Fashion-MNIST preset, exact parity with keras.applications VGG,
grayscale and variable-size inputs, and argument errors.

The shared checks on ``cnn_tiny`` run in tests/test_registry.py.
"""

import keras
import pytest

from bigkeras import build
from bigkeras.models.cnn import cnn
from tests.helpers import check_model


def _weight_shapes(model):
    return [tuple(w.shape) for w in model.weights]


def test_fashion_mnist_preset_passes_shared_checks():
    model = build("cnn_fashion_mnist")
    assert model.input.name == "images" and tuple(model.input.shape) == (None, 28, 28, 1)
    check_model(model, expected_output_shape=(10,))


def test_fashion_mnist_preset_parameter_count():
    # Convs without bias (BN follows; BN has 4 weights per channel), 28 -> 14 -> 7 pooling:
    # 3*3*(1*32 + 32*32 + 32*64 + 64*64) + 4*(32 + 32 + 64 + 64) + (7*7*64*128 + 128) + (128*10 + 10)
    assert build("cnn_fashion_mnist").count_params() == 64_800 + 768 + 401_536 + 1_290


@pytest.mark.parametrize(
    "preset, reference, expected",
    [
        ("vgg16", keras.applications.VGG16, 138_357_544),
        # 2 x 143M parameters to allocate: slow on 2 cores.
        pytest.param("vgg19", keras.applications.VGG19, 143_667_240, marks=pytest.mark.slow),
    ],
)
def test_vgg_presets_match_keras_applications(preset, reference, expected):
    # Build only, no forward pass.
    ref = reference(weights=None)
    ref_shapes = _weight_shapes(ref)
    assert ref.count_params() == expected
    del ref
    keras.backend.clear_session()

    ours = build(preset)
    assert ours.count_params() == expected
    assert _weight_shapes(ours) == ref_shapes  # same layers, same order


def test_vgg_accepts_grayscale():
    model = build("vgg16", input_shape=(32, 32, 1), num_classes=10)
    assert tuple(model.get_layer("cnn_block1_conv1").kernel.shape) == (3, 3, 1, 64)
    # 32 -> 1 after five poolings: fc1 sees 512 features.
    assert tuple(model.get_layer("cnn_fc1").kernel.shape) == (512, 4096)


def test_average_head_takes_variable_sizes():
    model = cnn(
        input_shape=(None, None, 3), num_classes=4, filters=(4, 8), convs_per_block=(1, 2),
        dense_units=(), dropout=0.2, head="avg", name="var",
    )  # fmt: skip
    check_model(model, expected_output_shape=(4,))
    assert all(l.name.startswith("var_") for l in model.layers if l.name not in ("images", "logits"))
    assert len([l for l in model.layers if isinstance(l, keras.layers.Conv2D)]) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": (32, -1)}, r"filters\[1\]"),
        ({"convs_per_block": (2, 2, 2)}, "convs_per_block.*one entry per block"),
        ({"convs_per_block": 0}, r"convs_per_block\[0\]"),
        ({"dense_units": (64, 0)}, r"dense_units\[1\]"),
        ({"dropout": 1.0}, "dropout"),
        ({"head": "max"}, "head"),
        ({"num_classes": 0}, "num_classes"),
        ({"input_shape": (28, 28)}, "input_shape.*rank 3"),
        ({"input_shape": (None, 28, 1)}, "input_shape.*head='avg'"),
        ({"filters": (8,) * 5}, "input_shape.*at least 32"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    args = {"input_shape": (28, 28, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        cnn(**args)
