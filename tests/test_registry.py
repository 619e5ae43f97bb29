"""The registry, and the shared checks over the tiny preset of every registered family."""

import json

import pytest

import bigkeras
from bigkeras import registry
from tests.helpers import check_model


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match=r"Unknown model 'nope'.*mlp_tiny"):
        bigkeras.build("nope")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mlp_tiny", "mlp", lambda **kw: None)


def test_overrides_win_over_preset():
    model = bigkeras.build("mlp_tiny", num_classes=7, name="custom")
    assert model.name == "custom"
    assert model.output.shape[-1] == 7


def test_list_models_filters_by_pattern():
    assert bigkeras.list_models("mlp_*") == ["mlp_mnist", "mlp_tiny"]
    assert set(bigkeras.list_models()) >= {"mlp_mnist", "mlp_tiny"}


@pytest.mark.parametrize("name", bigkeras.list_models("*_tiny"))
def test_every_tiny_preset(name):
    spec = registry.get(name)
    # Presets are data: the kwargs survive a JSON round trip and still build.
    kwargs = json.loads(json.dumps(spec.kwargs))
    model = spec.builder(**kwargs)
    # Classifiers give (batch, num_classes) logits; language models (batch, length, vocab).
    expected = (kwargs["num_classes"],) if "num_classes" in kwargs else None
    check_model(model, vocab_size=_vocab_size(kwargs), expected_output_shape=expected)


def test_every_family_has_a_tiny_preset():
    families = {registry.get(n).family for n in bigkeras.list_models()}
    assert {f"{f}_tiny" for f in families} <= set(bigkeras.list_models("*_tiny"))


def _vocab_size(kwargs):
    sizes = [v for k, v in kwargs.items() if k.endswith("vocab_size")]
    return min(sizes, default=2)


@pytest.mark.parametrize("name", bigkeras.list_models("*_tiny"))
def test_logits_stay_float32_under_mixed_precision(name):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = bigkeras.build(name)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for output in model.outputs:
        assert output.dtype == "float32", (output.name, output.dtype)
