"""keras.applications weights files into bigkeras' vision builders: equal predictions with and
without the top, layers paired by structure, and errors that name the file, tensor or argument.

Every weight file here is written by keras.applications itself (``weights=None``, then random
values for every weight, batch-norm statistics included, so a mispaired tensor shows).
"""

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from bigkeras import recipe
from bigkeras.checkpoints.applications import ARCHS, load_applications, weighted_layers
from tests.helpers import assert_close, perturbed_weights

SMALL = {"ResNet50": (64, 64, 3), "ResNet50V2": (64, 64, 3), "VGG16": (32, 32, 3), "InceptionV3": (75, 75, 3)}


def _reference(arch, *, include_top, input_shape=None, seed=0):
    """``keras.applications.<arch>`` with seeded random values in every weight."""
    kwargs = {"classifier_activation": None} if include_top else {}
    model = getattr(keras.applications, arch)(weights=None, include_top=include_top, input_shape=input_shape, **kwargs)
    model.set_weights(perturbed_weights(model, seed=seed))
    return model


def _save(model, path, *, legacy=False):
    if legacy:  # the layout of the published ..._tf_dim_ordering_tf_kernels.h5 files
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
    else:
        model.save_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def resnet50_notop(tmp_path_factory):
    """A ResNet50 feature extractor at 32x32 and its weights file."""
    ref = _reference("ResNet50", include_top=False, input_shape=(32, 32, 3))
    return ref, _save(ref, tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5")


def _parity(ref, path, arch, *, include_top, input_shape, batch=2, **overrides):
    ours = load_applications(path, arch=arch, include_top=include_top, input_shape=input_shape, **overrides)
    assert ours.count_params() == ref.count_params()
    images = np.random.default_rng(1).standard_normal((batch, *ref.input_shape[1:])).astype("float32")
    expected = np.asarray(ref(images, training=False))
    got = np.asarray(ours(images, training=False))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5
    return ours


@pytest.mark.parametrize("arch", list(SMALL))
def test_without_top_predictions_equal(arch, tmp_path):
    ref = _reference(arch, include_top=False, input_shape=SMALL[arch])
    path = _save(ref, tmp_path / f"{arch}.weights.h5")
    ours = _parity(ref, path, arch, include_top=False, input_shape=SMALL[arch])
    assert ours.output_shape == ref.output_shape  # the last feature map: no pooling, no classifier


# VGG16's top at 32x32: fc1 reads a 1x1x512 map, so its kernel is 512x4096, not 25088x4096 (138M
# weights at 224x224, 2.8 GB of copies in this test); the layers pair up the same way. Its 224x224
# count is checked in test_cnn.py, the default input shape with the top by the other archs here.
TOP_SHAPES = {"VGG16": (32, 32, 3)}


@pytest.mark.parametrize("arch", ["ResNet50", "ResNet50V2", "VGG16", "InceptionV3"])
def test_with_top_predictions_equal(arch, tmp_path):
    input_shape = TOP_SHAPES.get(arch)
    ref = _reference(arch, include_top=True, input_shape=input_shape)  # default 224x224 (299 for Inception)
    # The published files' legacy layout (Keras' own .weights.h5 layout: the tests without the top).
    path = _save(ref, tmp_path / f"{arch.lower()}_weights_tf_dim_ordering_tf_kernels.h5", legacy=True)
    ours = _parity(ref, path, arch, include_top=True, input_shape=input_shape, batch=1)
    assert ours.output_shape == (None, 1000)


def test_published_h5_layout_and_variable_size(tmp_path):
    # The published files are legacy HDF5 (one group per layer); keras' load_weights reads
    # both layouts. Without the top, input_shape=None means variable-size images.
    ref = _reference("ResNet50V2", include_top=False, input_shape=(None, None, 3))
    path = _save(ref, tmp_path / "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", legacy=True)
    ours = load_applications(path, arch="ResNet50V2", include_top=False)
    assert ours.input_shape == (None, None, None, 3)
    images = np.random.default_rng(2).standard_normal((1, 40, 56, 3)).astype("float32")
    assert_close(np.asarray(ours(images)), np.asarray(ref(images)), atol=1e-5, rtol=0)


def test_weight_free_overrides_are_allowed(resnet50_notop):
    ref, path = resnet50_notop
    ours = _parity(ref, path, "ResNet50", include_top=False, input_shape=(32, 32, 3), name="backbone")
    # Paired by structure: our layer names need not match anything in the file.
    assert ours.name == "backbone" and ours.layers[1].name.startswith("backbone_")


def test_pairing_is_structural_not_by_construction_order():
    # The same residual block built shortcut-first and residual-first, Add inputs either way:
    # the canonical order is the same (the shortcut first), whatever the names.
    def block(shortcut_first, add_order, prefix):
        x = keras.Input((8, 8, 4))

        def shortcut():
            return keras.layers.Conv2D(6, 1, name=f"{prefix}a")(x)

        def residual():
            r = keras.layers.Conv2D(5, 3, padding="same", name=f"{prefix}b")(x)
            return keras.layers.Conv2D(6, 3, padding="same", name=f"{prefix}c")(r)

        if shortcut_first:
            s, r = shortcut(), residual()
        else:
            r, s = residual(), shortcut()
        y = keras.layers.Add()([s, r] if add_order else [r, s])
        return keras.Model(x, y)

    shapes = {
        tuple(tuple(w.shape) for layer in weighted_layers(block(first, order, f"m{first}{order}"))
              for w in layer.weights)
        for first in (True, False) for order in (True, False)
    }  # fmt: skip
    assert shapes == {((1, 1, 4, 6), (6,), (3, 3, 4, 5), (5,), (3, 3, 5, 6), (6,))}


# Errors
# ---------------------------------------------------------------------------------------


def test_unknown_arch_lists_the_supported_ones(resnet50_notop):
    with pytest.raises(ValueError, match=r"`arch`.*'ResNet50'.*'InceptionV3'.*'MobileNetV2'"):
        load_applications(resnet50_notop[1], arch="MobileNetV2")
    assert set(ARCHS) >= {"ResNet50", "ResNet50V2", "VGG16", "InceptionV3"}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        load_applications(tmp_path / "nowhere.h5", arch="ResNet50")


@pytest.mark.parametrize("name, content", [("corrupt.h5", b"not an HDF5 file"), ("weights.npz", b"")])
def test_unreadable_file_is_named(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=name):
        load_applications(path, arch="ResNet50", include_top=False, input_shape=(32, 32, 3))


def test_file_of_another_arch_or_top_is_named(resnet50_notop):
    _, path = resnet50_notop
    with pytest.raises(ValueError, match=r"resnet50_notop.weights.h5.*VGG16"):
        load_applications(path, arch="VGG16", include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"resnet50_notop.weights.h5.*include_top=True.*predictions"):
        load_applications(path, arch="ResNet50", include_top=True)


def test_num_classes_with_the_top_is_refused(resnet50_notop):
    with pytest.raises(ValueError, match=r"`num_classes`=10.*1000-class top.*include_top=False"):
        load_applications(resnet50_notop[1], arch="ResNet50", num_classes=10)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # a different shape: the tensor and both shapes
        ({"width": 32}, r"tensor 'resnet_stem_conv/kernel' has shape \(7, 7, 3, 32\).*"
                        r"'conv1_conv/kernel' \(7, 7, 3, 64\)"),
        # a different layer count
        ({"stage_blocks": (3, 4, 6, 2)}, r"bigkeras model has 100 layers with weights, the checkpoint 106"),
        # other variables in a layer
        ({"use_bias": False}, r"resnet_stem_conv' and checkpoint 'conv1_conv' hold \['kernel'\] and "
                              r"\['kernel', 'bias'\]"),
        # a layer of another type at the same place
        ({"preact": True}, r"'resnet_stage1_block1_conv1' and checkpoint 'conv2_block1_0_bn' differ in "
                           r"type, Conv2D and BatchNormalization"),
    ],
)
def test_shape_changing_overrides_are_refused(resnet50_notop, overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        load_applications(resnet50_notop[1], arch="ResNet50", include_top=False, input_shape=(32, 32, 3), **overrides)
    assert "resnet50_notop.weights.h5" in str(info.value) and repr(overrides)[1:-1] in str(info.value)


def test_a_late_mismatch_assigns_nothing(tmp_path, monkeypatch):
    ref = _reference("VGG16", include_top=False, input_shape=(32, 32, 3))
    path = _save(ref, tmp_path / "vgg16_notop.weights.h5")
    assigned = []
    original = keras.Variable.assign

    def spy(self, value):
        assigned.append(self.path)
        return original(self, value)

    monkeypatch.setattr(keras.Variable, "assign", spy)
    # Block 5 is the 11th conv of 13: ten layers pair up before the mismatch.
    with pytest.raises(ValueError, match=r"'mine_block5_conv1/kernel' has shape \(3, 3, 512, 256\)"):
        load_applications(path, arch="VGG16", include_top=False, input_shape=(32, 32, 3),
                          filters=(64, 128, 256, 512, 256), name="mine")  # fmt: skip
    assert assigned and not [p for p in assigned if p.startswith("mine")]  # the reference loaded, ours untouched


# The transfer-learning recipe's backbone
# ---------------------------------------------------------------------------------------


def test_recipe_backbone_is_the_bigkeras_model(resnet50_notop, tmp_path):
    ref, path = resnet50_notop
    backbone = recipe.load_backbone(path, arch="ResNet50", input_shape=(32, 32, 3))
    expected = load_applications(path, arch="ResNet50", include_top=False, input_shape=(32, 32, 3))
    assert backbone.name == expected.name == "resnet"
    assert [type(l) for l in backbone.layers] == [type(l) for l in expected.layers]
    assert [l.name for l in backbone.layers] == [l.name for l in expected.layers]
    for a, b in zip(backbone.weights, expected.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # An arch without a bigkeras builder still falls back to keras.applications' own model.
    mobile = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    mobile_path = _save(mobile, tmp_path / "mobilenet_v2.weights.h5")
    fallback = recipe.load_backbone(mobile_path, arch="MobileNetV2", input_shape=(32, 32, 3))
    assert fallback.name.startswith("mobilenetv2")
