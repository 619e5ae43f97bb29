import pytest

from bigkeras import build
from bigkeras.models.mlp import mlp


# The tiny preset's shared checks (and output shape): test_registry.py::test_every_tiny_preset[mlp_tiny].


def test_mnist_preset_parameter_count():
    # 784*512+512 + 512*256+256 + 256*10+10
    assert build("mlp_mnist").count_params() == 535_818


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_units": (16, -1)}, "hidden_units[1]"),
        ({"num_classes": 0}, "num_classes"),
        ({"dropout": 1.5}, "dropout"),
        ({"input_shape": (8, None)}, "input_shape"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    args = {"input_shape": (8, 8), "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mlp(**args)
