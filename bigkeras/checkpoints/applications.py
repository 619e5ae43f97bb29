"""keras.applications weights files (``.h5``) loaded into bigkeras' own vision builders.

Keras itself reads the file, into the matching ``keras.applications`` model built with
``weights=None``; the weights are then copied into the bigkeras model layer by layer, the
layers paired by graph structure, never by name. Both models' weighted layers are walked in
one canonical order: a depth-first post-order from the output, branches in the order their
merge takes them, except that the inputs of an ``Add`` (a ResNet block's shortcut and residual
branch) go in order of how many weighted layers lie upstream, so the shortcut comes first
however either model happens to list them. Every pair must agree in layer type, variable roles
and shapes before anything is assigned, so a mismatch never leaves a model half loaded.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import keras

from bigkeras import checks, registry
from bigkeras.checkpoints.common import h5_parameters
from bigkeras.checkpoints.mapping import CheckpointError

# keras.applications constructor -> bigkeras registered model.
ARCHS = {
    "ResNet50": "resnet50",
    "ResNet101": "resnet101",
    "ResNet152": "resnet152",
    "ResNet50V2": "resnet50v2",
    "ResNet101V2": "resnet101v2",
    "ResNet152V2": "resnet152v2",
    "VGG16": "vgg16",
    "VGG19": "vgg19",
    "InceptionV3": "inception_v3",
}
_CLASSES = 1000  # the ImageNet top of every keras.applications file
# Merges whose result does not depend on the order of their inputs.
_COMMUTATIVE = (keras.layers.Add, keras.layers.Multiply, keras.layers.Average, keras.layers.Maximum,
                keras.layers.Minimum)  # fmt: skip


def load_applications(
    path: str | os.PathLike, *, arch: str, include_top: bool = True, input_shape=None, **overrides
) -> keras.Model:
    """Build the bigkeras model matching ``arch`` and load a keras.applications weights file.

    Args:
        path: str or path, an ``.h5`` file as ``keras.applications.<arch>(...).save_weights``
            writes it (``*.weights.h5``) or as published
            (``*_weights_tf_dim_ordering_tf_kernels[_notop].h5``): whatever Keras'
            ``load_weights`` reads.
        arch: str, the keras.applications constructor, one of ``ARCHS``: ``"ResNet50"``,
            ``"ResNet101"``, ``"ResNet152"``, their ``V2`` forms, ``"VGG16"``, ``"VGG19"``,
            ``"InceptionV3"``.
        include_top: bool, keep the 1000-class classifier (the file must have it); without it
            the model returns the last feature map. Default True.
        input_shape: ``(height, width, channels)``; default the preset's (224 or 299 square)
            with the top, ``(None, None, 3)`` without, as keras.applications does.
        **overrides: builder kwargs merged over the preset, e.g. ``dropout`` or ``name``.
            Ones that change a weight shape are refused, ``num_classes`` other than 1000 with
            the top among them (use ``include_top=False`` and a new head).

    Returns:
        The bigkeras functional ``keras.Model`` (``bigkeras.build(ARCHS[arch], ...)``) with
        every weight loaded: ``logits`` ``(batch, 1000)``, or features ``(batch, h, w, c)``
        without the top.

    Raises:
        CheckpointError (a ValueError): an unknown ``arch``, an unreadable file or one of
            another architecture, a refused override, or a layer or tensor whose shape
            differs (both shapes named).
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> backbone = load_applications("resnet50_notop.h5", arch="ResNet50",
        ...                              include_top=False, input_shape=(96, 96, 3))
    """
    name = ARCHS[checks.one_of("arch", arch, ARCHS)]
    checks.one_of("include_top", include_top, (True, False))
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keras.applications weights file {str(path)!r} does not exist.")
    if path.suffix not in (".h5", ".hdf5"):
        raise CheckpointError(f"keras.applications weights file {str(path)!r} must be an .h5 file.")
    if include_top and overrides.get("num_classes", _CLASSES) != _CLASSES:
        raise CheckpointError(
            f"`num_classes`={overrides['num_classes']!r} with include_top=True would change the "
            f"shape of the {_CLASSES}-class top stored in {str(path)!r}; load with "
            f"include_top=False and put a new head on it."
        )
    h5_parameters(path)  # a file HDF5 cannot read stops here, before two models are built
    if input_shape is None:
        input_shape = registry.get(name).kwargs["input_shape"] if include_top else (None, None, 3)
    input_shape = tuple(input_shape)

    model = registry.build(name, include_top=include_top, input_shape=input_shape, **overrides)
    reference = getattr(keras.applications, arch)(weights=None, include_top=include_top, input_shape=input_shape)
    try:
        with warnings.catch_warnings():  # on a mismatch Keras warns per group, then raises anyway
            warnings.filterwarnings("ignore", "Skipping nested container", UserWarning)
            reference.load_weights(str(path))
    except Exception as error:  # h5py's OSError, Keras' ValueError: same advice either way
        raise CheckpointError(
            f"Could not load {str(path)!r} as keras.applications.{arch}(include_top={include_top}) "
            f"weights: {_first_lines(error)}"
        ) from error

    where = f"{str(path)!r} (keras.applications.{arch}) into bigkeras {name!r}"
    if overrides:
        where += f" with overrides {overrides!r}"
    pairs = _paired_weights(model, reference, where)
    for variable, value in pairs:  # only once every pair has passed
        variable.assign(value)
    return model


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a functional ``model`` that own weights, in the canonical order.

    A depth-first post-order from the outputs: each layer comes after every layer it reads,
    inputs taken in the order the layer takes them, those of commutative merges (``Add``...)
    sorted by how many weighted layers lie upstream of each (ties keep their order).

    Args:
        model: a functional ``keras.Model`` whose layers are each called once.

    Returns:
        A list of layers with weights.
    """
    producer = {id(t): layer for layer in model.layers for t in _flat(layer.output)}
    outputs = [producer[id(t)] for t in _flat(model.outputs)]

    def parents(layer):
        if isinstance(layer, keras.layers.InputLayer):
            return []
        return [producer[id(t)] for t in _flat(layer.input)]

    topological = _post_order(outputs, parents)
    upstream = {}  # id(layer) -> ids of the weighted layers at or above it
    for layer in topological:
        ids = set().union(*(upstream[id(p)] for p in parents(layer)))
        upstream[id(layer)] = ids | {id(layer)} if layer.weights else ids

    def canonical_parents(layer):
        found = parents(layer)
        if isinstance(layer, _COMMUTATIVE):
            found = sorted(found, key=lambda p: len(upstream[id(p)]))  # stable: ties keep order
        return found

    return [layer for layer in _post_order(outputs, canonical_parents) if layer.weights]


def _post_order(outputs, parents):
    """The layers reachable from the ``outputs`` layers, each after its ``parents(layer)``."""
    order, seen = [], set()
    # Iterative: ResNet-152's graph is deeper than Python's recursion limit allows.
    stack = [(layer, False) for layer in reversed(outputs)]
    while stack:
        layer, done = stack.pop()
        if done:
            order.append(layer)
            continue
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        stack.append((layer, True))
        stack.extend((p, False) for p in reversed(parents(layer)) if id(p) not in seen)
    return order


def _paired_weights(model, reference, where):
    """``[(variable of model, value from reference)]``; raise on the first disagreement."""
    ours, theirs = weighted_layers(model), weighted_layers(reference)
    pairs = []
    for i, (mine, other) in enumerate(zip(ours, theirs)):
        layer = f"weighted layer #{i}, bigkeras {mine.name!r} and checkpoint {other.name!r}"
        if type(mine) is not type(other):
            raise CheckpointError(
                f"Cannot load {where}: {layer} differ in type, {type(mine).__name__} and "
                f"{type(other).__name__}."
            )
        roles, other_roles = [w.name for w in mine.weights], [w.name for w in other.weights]
        if roles != other_roles:
            raise CheckpointError(f"Cannot load {where}: {layer} hold {roles} and {other_roles}.")
        for variable, value in zip(mine.weights, other.weights):
            if tuple(variable.shape) != tuple(value.shape):
                raise CheckpointError(
                    f"Cannot load {where}: tensor {variable.path!r} has shape {tuple(variable.shape)}, "
                    f"the checkpoint's {value.path!r} {tuple(value.shape)} ({layer})."
                )
            pairs.append((variable, keras.ops.convert_to_numpy(value)))
    if len(ours) != len(theirs):  # checked last, so that a divergence is named where it starts
        raise CheckpointError(
            f"Cannot load {where}: the bigkeras model has {len(ours)} layers with weights, the "
            f"checkpoint {len(theirs)}."
        )
    return pairs


def _flat(tensors):
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _first_lines(error: Exception) -> str:
    # Keras' own messages can go on to print whole variables: keep the first two lines.
    text = str(error).split(" Target variable:")[0]  # what follows prints the whole variable
    lines = [line.strip()[:300] for line in text.splitlines() if line.strip()]
    return " ".join(lines[:2]) or type(error).__name__
