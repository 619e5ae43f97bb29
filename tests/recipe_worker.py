"""Run a recipe as ``python recipes/NAME.py FLAGS`` does, SIGKILLing this process at one step.

    python tests/recipe_worker.py EPOCH:STEP recipes/fashion_mnist_cnn.py --workers ... --worker-index 1

The kill lands mid-epoch at a known place (1-based epoch, 0-based step), which a signal sent
from outside on a timer cannot promise; everything else is the recipe's own command.
"""

import os
import runpy
import signal
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

import bigkeras.training  # noqa: E402


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.at, self.epoch = (epoch - 1, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            print(f"recipe_worker: SIGKILL at epoch {self.epoch + 1}, step {batch}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    epoch, step = map(int, sys.argv[1].split(":"))
    script, flags = sys.argv[2], sys.argv[3:]
    train = bigkeras.training.train

    def train_then_kill(*args, callbacks=(), **kwargs):
        return train(*args, callbacks=[*callbacks, KillAt(epoch, step)], **kwargs)

    bigkeras.training.train = train_then_kill  # the recipe imports it after parse_args
    sys.argv = [script, *flags]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
