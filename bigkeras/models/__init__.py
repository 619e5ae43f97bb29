"""Every model family. Importing this package registers all of them, in a fixed order."""

from bigkeras.models import (  # noqa: F401
    bert,
    cnn,
    gpt,
    inception,
    mlp,
    recurrent,
    resnet,
    seq2seq,
    t5,
    transformer,
)
