"""Activations that checkpoints name and Keras has no string for."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="bigkeras")
def gelu_approximate(x):
    """GELU with the tanh approximation (Hendrycks and Gimpel, 2016), as GPT-2 uses it.

    ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))``: Hugging Face's ``gelu_new`` and
    ``gelu_pytorch_tanh``, and keras-hub's GPT-2 and BERT. ``"gelu"`` in Keras is the exact
    (erf) GELU that BERT checkpoints use.
    """
    return keras.activations.gelu(x, approximate=True)


def get(identifier):
    """``keras.activations.get``, which also knows ``"gelu_approximate"``.

    Example:
        >>> get("gelu_approximate")(x)  # the tanh approximation; get("gelu") is exact
    """
    if identifier == "gelu_approximate":
        return gelu_approximate
    return keras.activations.get(identifier)
