"""Argument checks that speak to the user: each error names the argument, what it got and
what it accepts. Builders, the harness and the serving code all validate through these."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is a positive int (or zero when ``allow_zero``), else raise."""
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        accepts = "a non-negative integer" if allow_zero else "a positive integer"
        raise ValueError(f"`{name}` must be {accepts}, got {value!r}.")
    return value


def positive_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a positive number (or zero when ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        accepts = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"`{name}` must be {accepts}, got {value!r}.")
    return float(value)


def positive_ints(name: str, values: Any, *, allow_zero: bool = False) -> tuple[int, ...]:
    """Return a non-empty sequence of positive ints as a tuple, else raise naming ``name``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"`{name}` must be a sequence of integers, got {values!r}.")
    values = tuple(values)
    if not values:
        raise ValueError(f"`{name}` must not be empty.")
    for i, v in enumerate(values):
        positive_int(f"{name}[{i}]", v, allow_zero=allow_zero)
    return values


def fraction(name: str, value: Any, *, inclusive_high: bool = False) -> float:
    """Return ``value`` if it lies in [0, 1) (or [0, 1] when ``inclusive_high``), else raise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = 0 <= value <= 1 if inclusive_high else 0 <= value < 1
    if not ok:
        interval = "[0, 1]" if inclusive_high else "[0, 1)"
        raise ValueError(f"`{name}` must be a number in {interval}, got {value!r}.")
    return float(value)


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}.")
    return value


def shape(name: str, value: Any, *, rank: int | Sequence[int], channels: bool = False) -> tuple:
    """Return ``value`` as a tuple shape of the given rank(s) (without the batch axis).

    ``None`` entries are allowed (variable sizes) except for the channel axis when
    ``channels`` is set.
    """
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"`{name}` must be a shape tuple of rank {_ranks(ranks)}, got {value!r}.")
    value = tuple(value)
    if len(value) not in ranks:
        raise ValueError(
            f"`{name}` must have rank {_ranks(ranks)} (no batch axis), got {value!r} "
            f"of rank {len(value)}."
        )
    for i, d in enumerate(value):
        if d is None and not (channels and i == len(value) - 1):
            continue
        positive_int(f"{name}[{i}]", d)
    return value


def min_side(name: str, image_shape: tuple, minimum: int, why: str) -> None:
    """Raise unless the (height, width) of ``image_shape`` are at least ``minimum`` (or None).

    ``why`` completes "too small: ..." with the network's reason, e.g. "it downsamples by 32x".
    """
    if any(d is not None and d < minimum for d in image_shape[:2]):
        raise ValueError(
            f"`{name}` {image_shape!r} is too small: {why}, so height and width must be "
            f"at least {minimum}."
        )


def _ranks(ranks: tuple[int, ...]) -> str:
    return " or ".join(str(r) for r in ranks)
