"""``TrainConfig``: every knob of the harness in one flat, JSON-serialisable dataclass."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from bigkeras import checks
from bigkeras.training.runs import write_atomic

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor")
SCHEDULES = ("constant", "cosine", "step")
MIXED_PRECISION = (False, "auto", "mixed_bfloat16", "mixed_float16")


@dataclass
class TrainConfig:
    """How to train: strategy, optimisation, precision, checkpoints and logging.

    Every field is plain data, so ``dataclasses.asdict(config)`` is what ``train()`` writes
    to ``run_dir/config.json``. Values are checked on construction; a bad one raises a
    ``ValueError`` that names the field.

    Args:
        epochs: int, passes over the data (or of ``steps_per_epoch`` steps). Default 1.
        batch_size: int, examples per replica per step; the global batch is this times the
            number of replicas. Default 32.
        steps_per_epoch: int or None, steps per epoch; None runs the whole dataset.
        validation_steps: int or None, validation steps; None runs the whole validation set.
        strategy: ``"auto"`` (multi-worker when ``TF_CONFIG`` lists several workers, else
            Mirrored over all GPUs or over ``cpu_replicas`` logical CPUs, else the default
            strategy), ``"default"``, ``"one_device"``, ``"mirrored"`` or ``"multi_worker"``.
        cpu_replicas: int, split the CPU into this many logical devices (0 = do not split).
            Must happen before TensorFlow initialises its devices.
        optimizer: ``"adamw"``, ``"adam"``, ``"sgd"`` (with ``momentum``) or ``"adafactor"``
            (T5's: factored second moments, steps scaled by each weight's RMS).
        learning_rate: float, the peak learning rate.
        weight_decay: float, decoupled weight decay for AdamW, SGD and Adafactor; never applied to
            biases and normalisation parameters.
        momentum: float in [0, 1), SGD momentum.
        schedule: ``"constant"``, ``"cosine"`` (decay to 0 over the run) or ``"step"``
            (times ``step_gamma`` at each fraction of the run in ``step_boundaries``);
            any of them after ``warmup_steps`` of linear warmup.
        warmup_steps: int, linear warmup steps (optimizer steps).
        step_boundaries: fractions of the run where the step schedule decays.
        step_gamma: float in (0, 1], the step schedule's decay factor.
        clipnorm: float or None, clip each gradient to this L2 norm.
        grad_accum_steps: int, average gradients over this many batches per update.
        mixed_precision: False, ``"auto"`` (bf16 on CPU, fp16 on GPU), ``"mixed_bfloat16"``
            or ``"mixed_float16"`` (with loss scaling).
        jit_compile: bool or ``"auto"`` (XLA on GPU; off on CPU, where it measured slower).
        steps_per_execution: int, steps run per ``tf.function`` call.
        run_dir: str, where checkpoints, logs, history and plots go.
        backup_freq: ``"epoch"`` or int, how often (in steps) to back up the training state
            for fault tolerance.
        early_stopping_patience: int or None, epochs without improvement of ``monitor``
            before stopping; None never stops early.
        precise_bn_batches: int, 0 (default) or how many training batches re-estimate every
            ``BatchNormalization`` layer's moving mean and variance with the current weights
            before each validation, or at the end of an epoch without one, from the first
            batches of the training data (PreciseBN, Wu & Johnson 2021, "Rethinking
            'Batch' in BatchNorm"): the moving averages lag a model that is still changing
            fast, as in a one-epoch schedule.
        monitor: str, the metric for the best checkpoint and early stopping; ``val_*``
            falls back to its training counterpart when there is no validation data.
        seed: int, seeds Python, NumPy and TensorFlow.
        deterministic: bool, enable TensorFlow op determinism (exact reruns, slower).
        tensorboard: bool, write TensorBoard logs to ``run_dir/logs``.
        resume: bool, continue from the backup in ``run_dir`` if there is one. A backup of
            another model or other training settings (``runs.MUST_MATCH``: batch size,
            optimizer, schedule, seed, LoRA...) stops the run with an error; ``epochs`` may
            change, to extend a run.
        verbose: int, 0 silent, 1 progress bar, 2 one line per epoch.
        lora_rank: int, 0 (default: train every weight) or the rank of LoRA adapters: the
            model's bigkeras Transformer backbone (``BertBackbone``, ``GPT``, ``Seq2Seq``, ``T5``,
            itself or nested) is frozen and adapters on its ``lora_targets`` train, with
            whatever lies outside it (a task head).
        lora_alpha: float or None, the adapters' scale numerator (scale ``alpha / rank``);
            None is ``lora_rank``.
        lora_targets: roles of the backbone's ``role_layers()`` to adapt. Default
            ``("query", "value")``; also ``"key"``, ``"attention_output"``, ``"ffn"``.
        peer_deadline: float or None, seconds a multi-worker run waits for every worker of
            ``TF_CONFIG`` to answer before building anything, then stops naming those that did
            not; None is ``$BIGKERAS_PEER_DEADLINE`` or 180.

    Example:
        >>> config = TrainConfig(epochs=10, batch_size=64, schedule="cosine", warmup_steps=100)
    """

    epochs: int = 1
    batch_size: int = 32
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    strategy: str = "auto"
    cpu_replicas: int = 0
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_steps: int = 0
    step_boundaries: tuple = (0.5, 0.75)
    step_gamma: float = 0.1
    clipnorm: float | None = None
    grad_accum_steps: int = 1
    mixed_precision: bool | str = False
    jit_compile: bool | str = "auto"
    steps_per_execution: int = 1
    run_dir: str = "runs/default"
    backup_freq: int | str = "epoch"
    early_stopping_patience: int | None = None
    precise_bn_batches: int = 0
    monitor: str = "val_loss"
    seed: int = 0
    deterministic: bool = False
    tensorboard: bool = True
    resume: bool = True
    verbose: int = 1
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_targets: tuple = ("query", "value")
    peer_deadline: float | None = None

    def __post_init__(self):
        checks.positive_int("epochs", self.epochs)
        checks.positive_int("batch_size", self.batch_size)
        _optional(checks.positive_int, "steps_per_epoch", self.steps_per_epoch)
        _optional(checks.positive_int, "validation_steps", self.validation_steps)
        checks.one_of("strategy", self.strategy, STRATEGIES)
        checks.positive_int("cpu_replicas", self.cpu_replicas, allow_zero=True)
        checks.one_of("optimizer", self.optimizer, OPTIMIZERS)
        checks.positive_number("learning_rate", self.learning_rate)
        checks.positive_number("weight_decay", self.weight_decay, allow_zero=True)
        checks.fraction("momentum", self.momentum)
        checks.one_of("schedule", self.schedule, SCHEDULES)
        checks.positive_int("warmup_steps", self.warmup_steps, allow_zero=True)
        self.step_boundaries = tuple(self.step_boundaries)
        for i, b in enumerate(self.step_boundaries):
            checks.fraction(f"step_boundaries[{i}]", b)
        checks.positive_number("step_gamma", self.step_gamma)
        checks.fraction("step_gamma", self.step_gamma, inclusive_high=True)
        _optional(checks.positive_number, "clipnorm", self.clipnorm)
        checks.positive_int("grad_accum_steps", self.grad_accum_steps)
        checks.one_of("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        checks.one_of("jit_compile", self.jit_compile, (True, False, "auto"))
        checks.positive_int("steps_per_execution", self.steps_per_execution)
        if not isinstance(self.run_dir, str) or not self.run_dir:
            raise ValueError(f"`run_dir` must be a non-empty path string, got {self.run_dir!r}.")
        if self.backup_freq != "epoch":
            checks.positive_int("backup_freq", self.backup_freq)
        _optional(checks.positive_int, "early_stopping_patience", self.early_stopping_patience)
        checks.positive_int("precise_bn_batches", self.precise_bn_batches, allow_zero=True)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"`monitor` must be a metric name such as 'val_loss', got {self.monitor!r}.")
        checks.positive_int("seed", self.seed, allow_zero=True)
        checks.one_of("verbose", self.verbose, (0, 1, 2))
        checks.positive_int("lora_rank", self.lora_rank, allow_zero=True)
        _optional(checks.positive_number, "lora_alpha", self.lora_alpha)
        self.lora_targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)
        if not self.lora_targets:
            raise ValueError("`lora_targets` must name at least one role, e.g. ('query', 'value').")
        _optional(checks.positive_number, "peer_deadline", self.peer_deadline)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready data (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)

    def write(self, path: str, *, model: str, kwargs: dict[str, Any] | None = None) -> None:
        """Write the run record ``{"model", "kwargs", "train": this config}`` as JSON to ``path``
        (atomically: a reader sees the old file or the whole new one).

        Args:
            path: the file, usually ``run_dir/config.json``.
            model: the registered model name (or the built model's name).
            kwargs: the builder overrides the run used.
        """
        record = {"model": model, "kwargs": dict(kwargs or {}), "train": self.to_dict()}
        write_atomic(path, json.dumps(record, indent=2, default=list))


def _optional(check, name, value):
    if value is not None:
        check(name, value)

