"""bigkeras: build, train and deploy large Keras models on TensorFlow.

    import bigkeras
    model = bigkeras.build("resnet50", num_classes=10)
    bigkeras.list_models("resnet*")

``train`` (the shared harness) and ``export_saved_model`` (TF Serving export) load on first use,
so importing the builders does not pull in the serving stack. Importing ``bigkeras``
registers every class its ``.keras`` checkpoints name (layers, the learning-rate schedule),
so ``keras.saving.load_model("runs/<recipe>/best.keras")`` works after ``import bigkeras``.
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from bigkeras.registry import build, list_models  # noqa: E402
from bigkeras import models as _models  # noqa: E402, F401  (registers the layers and builders)
from bigkeras.training import optim as _optim  # noqa: E402, F401  (registers WarmupSchedule)

__version__ = "0.1.0"
__all__ = ["build", "list_models", "train", "TrainConfig", "export_saved_model"]

_LAZY = {
    "train": "bigkeras.training",
    "TrainConfig": "bigkeras.training",
    "export_saved_model": "bigkeras.serving",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bigkeras' has no attribute {name!r}")
