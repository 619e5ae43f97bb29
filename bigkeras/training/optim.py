"""Optimizers and learning-rate schedules for the harness.

AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019) and SGD with
momentum, both with decoupled weight decay that skips biases and normalisation parameters;
constant, cosine (Loshchilov & Hutter, "SGDR", 2017) and step schedules after linear warmup.
"""

from __future__ import annotations

import math

import keras

from bigkeras.training.config import TrainConfig


@keras.saving.register_keras_serializable(package="bigkeras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then a decay.

    Args:
        peak: float, the learning rate reached at the end of warmup.
        total_steps: int, optimizer steps in the whole run.
        warmup_steps: int, linear warmup steps (0 = none).
        decay: ``"constant"``, ``"cosine"`` (to 0 at ``total_steps``) or ``"step"``.
        boundaries: fractions of ``total_steps`` where the step decay multiplies by ``gamma``.
        gamma: float, the step decay factor.

    Example:
        >>> lr = WarmupSchedule(1e-3, total_steps=1000, warmup_steps=100, decay="cosine")
        >>> float(lr(100))
        0.001
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="constant", boundaries=(0.5, 0.75), gamma=0.1):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.boundaries = tuple(float(b) for b in boundaries)
        self.gamma = float(gamma)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = max(self.warmup_steps, 1)
        lr = self.peak * keras.ops.minimum(1.0, (step + 1.0) / warmup) if self.warmup_steps else self.peak
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        # Progress through the decay phase, in [0, 1].
        t = keras.ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        if self.decay == "cosine":
            lr = lr * 0.5 * (1.0 + keras.ops.cos(math.pi * t))
        elif self.decay == "step":
            drops = sum(keras.ops.cast(t >= b, "float32") for b in self.boundaries)
            lr = lr * keras.ops.power(self.gamma, drops)
        return lr

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "boundaries": self.boundaries,
            "gamma": self.gamma,
        }


def make_schedule(config: TrainConfig, total_steps: int):
    """The learning rate for ``config``: a float when constant without warmup, else a schedule."""
    if config.schedule == "constant" and not config.warmup_steps:
        return config.learning_rate
    return WarmupSchedule(
        config.learning_rate,
        total_steps,
        config.warmup_steps,
        config.schedule,
        config.step_boundaries,
        config.step_gamma,
    )


def no_decay_variables(model: keras.Model) -> list:
    """Trainable variables weight decay must skip: biases, norm scales and offsets.

    The rule is the rank (as in timm and nanoGPT): vectors and scalars are biases, norm
    gammas/betas or learned scales, whatever the layer calls them; matrices and kernels decay.
    """
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


def make_optimizer(config: TrainConfig, model: keras.Model, total_steps: int) -> keras.optimizers.Optimizer:
    """Build the optimizer ``config`` names, with the schedule, clipping and accumulation.

    Args:
        config: the ``TrainConfig``.
        model: the built model (for the weight-decay exclusions).
        total_steps: int, optimizer steps (after gradient accumulation) in the whole run.

    Returns:
        A Keras optimizer, not yet built.
    """
    common = {
        "learning_rate": make_schedule(config, total_steps),
        "clipnorm": config.clipnorm,
        "gradient_accumulation_steps": config.grad_accum_steps if config.grad_accum_steps > 1 else None,
    }
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        opt = keras.optimizers.SGD(momentum=config.momentum, weight_decay=decay, **common)
    elif config.optimizer == "adam":
        opt = keras.optimizers.Adam(**common)
    elif config.optimizer == "adafactor":
        # Shazeer and Stern, 2018, as T5 trains: each update is scaled by the weight's RMS, so
        # T5's unit-variance embeddings and its small kernels move at the same relative rate.
        opt = keras.optimizers.Adafactor(weight_decay=decay, **common)
    else:
        opt = keras.optimizers.AdamW(weight_decay=config.weight_decay, **common)
    if decay and config.optimizer != "adam":
        opt.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return opt
