"""Transfer learning: pre-train a CNN backbone on five Fashion-MNIST classes, fine-tune on the rest.

1. Pre-train ``cnn_fashion_mnist`` on T-shirt/top, Trouser, Pullover, Dress and Coat and
   save its feature extractor (everything below the logits) as ``backbone.keras``.
2. Put a new head on it for Sandal, Shirt, Sneaker, Bag and Ankle boot; train the head with
   the backbone frozen, then unfreeze it and fine-tune everything at a 10x lower rate. Batch
   norm stays in inference mode throughout (the Keras transfer-learning guide).

``--weights PATH`` starts from a local backbone instead of step 1: a ``.keras`` model, a
keras.applications ``.h5`` weights file with ``--arch``, or a keras-hub preset directory;
images are resized and made RGB to fit it. Nothing downloads. An ``.h5`` file of an
architecture bigkeras builds (``ResNet50``, ``ResNet50V2``, ``VGG16``, ``InceptionV3``...)
loads into the bigkeras builder, so the fine-tuned model is a bigkeras model end to end;
others (e.g. ``MobileNetV2``) load into keras.applications' own model.

Measured: 96.4% test accuracy on the five new classes in 3 min 28 s on 2 CPU cores.

    python recipes/transfer_learning.py              # or: bigkeras train transfer_learning
    python recipes/transfer_learning.py --weights resnet50_notop.h5 --arch ResNet50
    python recipes/transfer_learning.py --smoke      # a few steps, for tests
"""

from bigkeras import recipe

# Setup
# ---------------------------------------------------------------------------------------
args = recipe.parse_args(
    __doc__, name="transfer_learning", data="fashion_mnist", epochs=2, batch_size=128, learning_rate=2e-3,
    extra=[
        (["--weights"], {"help": "a local .keras / .h5 file or keras-hub preset dir to start from"}),
        (["--arch"], {"help": "the keras.applications model an .h5 file belongs to"}),
        (["--image-size"], {"type": int, "default": 32, "help": "image side for variable-size backbones"}),
    ],
)

import os  # noqa: E402

import keras  # noqa: E402

from bigkeras import data  # noqa: E402
from bigkeras.serving import image_classifier_signatures  # noqa: E402
from bigkeras.training import train  # noqa: E402

# Data
# ---------------------------------------------------------------------------------------
fashion = recipe.load_data(args)
source, target = recipe.select_classes(fashion, range(5)), recipe.select_classes(fashion, range(5, 10))


def datasets(split_data, shape):  # train (shuffled), validation, test at the backbone's input shape
    prep = recipe.image_preprocessor(*shape)
    return [data.from_arrays(*split_data[k], map_fn=prep, shuffle=k == "train") for k in ("train", "validation", "test")]


# Model: a pre-trained backbone
# ---------------------------------------------------------------------------------------
if args.weights:
    size = (args.image_size, args.image_size, 3)
    backbone_path, backbone = args.weights, recipe.load_backbone(args.weights, arch=args.arch, input_shape=size)
else:
    pretrain = train("cnn_fashion_mnist", *datasets(source, (28, 28, 1))[:2],
                     recipe.train_config(args, run_dir=os.path.join(args.run_dir, "pretrain"), schedule="cosine"),
                     model_kwargs={"input_shape": (28, 28, 1), "num_classes": source.num_classes})
    backbone = keras.Model(pretrain.model.inputs, pretrain.model.get_layer("cnn_fc1").output, name="backbone")
    backbone_path = recipe.own_path(pretrain, os.path.join(args.run_dir, "pretrain", "backbone.keras"))
    backbone.save(backbone_path)
height, width, channels = backbone.input_shape[1:]  # None for variable-size backbones
shape = (height or args.image_size, width or args.image_size, channels)
train_ds, val_ds, test_ds = datasets(target, shape)

# Train: the head on a frozen backbone, then everything
# ---------------------------------------------------------------------------------------
def frozen_model():
    backbone = recipe.load_backbone(backbone_path, arch=args.arch, input_shape=shape)
    backbone.trainable = False
    return recipe.classifier_on(backbone, target.num_classes, image_size=shape[:2])


head_dir = os.path.join(args.run_dir, "head")
train(frozen_model, train_ds, val_ds, recipe.train_config(args, epochs=1, run_dir=head_dir))


def unfrozen_model():  # built afresh inside train()'s strategy scope, from the head run
    model = keras.saving.load_model(os.path.join(head_dir, "last.keras"))
    for layer in model.layers:  # the nested backbone keeps its own flag: `model.trainable` alone won't reach it
        layer.trainable = True
    return model


config = recipe.train_config(args, learning_rate=args.learning_rate / 10, schedule="cosine")
result = train(unfrozen_model, train_ds, val_ds, config)

# Export
# ---------------------------------------------------------------------------------------
# Real test images, at the backbone's size, for the warmup requests and the parity check.
examples = (recipe.image_preprocessor(*shape)(target.test.x[:4], None)[0].numpy() * 255).round().astype("uint8")
signatures = image_classifier_signatures(result.model, class_names=target.class_names, examples=examples)
recipe.finish(args, result, test_ds, target, signatures=signatures)
