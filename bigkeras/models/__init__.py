"""Every model family. Importing this package registers all of them, in a fixed order."""

from bigkeras.models import (  # noqa: F401
    cnn,
    inception,
    mlp,
    recurrent,
    resnet,
    transformer,
)
