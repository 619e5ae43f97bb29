"""The training harness: one ``train()`` over ``tf.distribute`` for every recipe.

    from bigkeras.training import TrainConfig, train
    result = train("resnet50", train_ds, val_ds, TrainConfig(epochs=10, strategy="mirrored"))
"""

from bigkeras.training.config import TrainConfig
from bigkeras.training.faults import WorkerLostError
from bigkeras.training.strategy import configure_cpu_replicas, make_strategy
from bigkeras.training.train import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "make_strategy", "configure_cpu_replicas", "WorkerLostError"]
