"""The decode loop: samplers, stop tokens, the exportable tf.function, argument errors."""

import os
import tempfile

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from bigkeras import build
from bigkeras.generation import generate, get_sampler, left_pad, make_generate_fn


@pytest.fixture(scope="module")
def model():
    model = build("gpt_tiny")
    # Sharpen the untrained model's logits (tied to this table) so its greedy choice is
    # clear-cut and temperature has something to flatten.
    table = model.token_embedding.embeddings
    table.assign(table * 30.0)
    return model


PROMPTS = [[5, 6, 7], [9], [3, 4]]


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8], []])
    np.testing.assert_array_equal(ids, [[5, 6, 7], [0, 0, 8], [0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 1], [0, 0, 0]])


def test_top_k_one_and_tiny_top_p_are_greedy(model):
    greedy = generate(model, PROMPTS, 6)["token_ids"]
    top1 = generate(model, PROMPTS, 6, sampler=keras_hub.samplers.TopKSampler(k=1, seed=3))["token_ids"]
    top_p = generate(model, PROMPTS, 6, sampler=keras_hub.samplers.TopPSampler(p=1e-6, seed=3))["token_ids"]
    np.testing.assert_array_equal(top1, greedy)
    np.testing.assert_array_equal(top_p, greedy)


def test_temperature_controls_sampling_spread(model):
    prompts = [[5, 6, 7]] * 64
    cold = generate(model, prompts, 4, sampler=keras_hub.samplers.RandomSampler(temperature=1e-3, seed=1))
    hot = generate(model, prompts, 4, sampler=keras_hub.samplers.RandomSampler(temperature=5.0, seed=1))
    greedy = generate(model, [[5, 6, 7]], 4)["token_ids"]
    assert (cold["token_ids"] == greedy).all()  # a near-zero temperature is greedy
    assert len({tuple(r) for r in hot["token_ids"][:, 3:]}) > 32  # a high one spreads out
    assert ((hot["token_ids"] >= 0) & (hot["token_ids"] < 64)).all()


def test_top_k_samples_only_among_the_k_likeliest(model):
    ids, mask = left_pad([[5, 6, 7]] * 200)
    out = generate(model, ids, 1, prompt_mask=mask, sampler=keras_hub.samplers.TopKSampler(k=3, seed=0))
    logits = model({"token_ids": ids[:1], "padding_mask": mask[:1]})[0, -1].numpy()
    assert set(out["token_ids"][:, -1]) <= set(np.argsort(logits)[-3:])


def test_exported_generate_fn_reloads_and_matches(model):
    fn = make_generate_fn(model, max_length=10, stop_token_ids=[7], jit_compile=False)  # as exports are
    module = tf.Module()
    module.model = model  # tracks the variables the function reads
    module.generate = fn
    ids, mask = left_pad(PROMPTS)
    expected = fn(ids, mask)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "generate")
        tf.saved_model.save(module, path, signatures={"generate": fn})
        loaded = tf.saved_model.load(path)
        got = loaded.signatures["generate"](ids=tf.constant(ids), mask=tf.constant(mask))
    np.testing.assert_array_equal(got["token_ids"], expected["token_ids"])
    np.testing.assert_array_equal(got["padding_mask"], expected["padding_mask"])


def test_xla_and_executor_loops_agree_and_prompt_buckets_change_nothing(model):
    ids, mask = left_pad(PROMPTS)
    xla = make_generate_fn(model, max_length=12, stop_token_ids=[7])(ids, mask)
    executor = make_generate_fn(model, max_length=12, stop_token_ids=[7], jit_compile=False)(ids, mask)
    for key in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(xla[key], executor[key])
    # generate() pads the 3-token prompts to 16 tokens on the left, then cuts that off again.
    out = generate(model, PROMPTS, 9, stop_token_ids=[7])
    np.testing.assert_array_equal(out["token_ids"], xla["token_ids"].numpy())
    np.testing.assert_array_equal(out["padding_mask"], xla["padding_mask"].numpy())


def test_bad_arguments_name_the_argument(model):
    with pytest.raises(ValueError, match="sampler"):
        get_sampler("nucleus")
    with pytest.raises(ValueError, match="max_length"):
        make_generate_fn(model, max_length=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, PROMPTS, 0)
    with pytest.raises(ValueError, match="`model` must be a gpt model"):
        make_generate_fn(build("mlp_tiny"), max_length=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than max_length"):
        make_generate_fn(model, max_length=3)(*left_pad([[1, 2, 3]]))


def test_seeded_top_p_draws_inside_the_nucleus_and_repeats_itself(model):
    from bigkeras.generation import SeededTopPSampler

    def sample(sampler, prompts, steps):
        fn = make_generate_fn(model, max_length=len(prompts[0]) + steps, sampler=sampler, jit_compile=False)
        return fn(*(tf.constant(a) for a in left_pad(prompts)))["token_ids"].numpy()

    greedy = generate(model, PROMPTS[:1], 4)["token_ids"]
    np.testing.assert_array_equal(sample(SeededTopPSampler(p=0.0), PROMPTS[:1], 4), greedy)  # p=0 is greedy

    hot = SeededTopPSampler(p=1.0, temperature=5.0, seed=4)
    first = sample(hot, [[5, 6, 7]] * 64, 3)
    again = sample(SeededTopPSampler(p=1.0, temperature=5.0, seed=4), [[5, 6, 7]] * 64, 3)
    np.testing.assert_array_equal(again, first)  # stateless: the same seed draws the same tokens
    assert len({tuple(r) for r in first[:, 3:]}) > 32  # rows and positions draw independently
    assert (sample(SeededTopPSampler(p=1.0, temperature=5.0, seed=5), [[5, 6, 7]] * 64, 3) != first).any()

    logits = model({"token_ids": tf.constant([[5, 6, 7]]), "padding_mask": tf.ones((1, 3), tf.int32)})[0, -1]
    probs = tf.nn.softmax(logits / 5.0)
    order = np.argsort(-probs.numpy())
    nucleus = order[: int(np.searchsorted(np.cumsum(probs.numpy()[order]), 0.5, side="right")) + 1]
    drawn = sample(SeededTopPSampler(p=0.5, temperature=5.0), [[5, 6, 7]] * 200, 1)[:, -1]
    assert set(drawn) <= set(nucleus) and len(set(drawn)) > 1
    with pytest.raises(ValueError, match="`p` must be a number in"):
        SeededTopPSampler(p=1.5)


def _int8_casts_in_loop_bodies(fn) -> int:
    """Cast ops from int8 inside the while loops of ``fn``'s graph (and the functions they call)."""
    library = {f.signature.name: f for f in fn.get_concrete_function().graph.as_graph_def().library.function}

    def count(name, seen):
        if name in seen:
            return 0
        seen.add(name)
        nodes = library[name].node_def
        return (sum(n.op == "Cast" and n.attr["SrcT"].type == tf.int8.as_datatype_enum for n in nodes)
                + sum(count(a.func.name, seen) for n in nodes for a in n.attr.values() if a.func.name in library))

    bodies = {n.attr["body"].func.name for f in library.values() for n in f.node_def if n.op in ("While", "StatelessWhile")}
    assert bodies
    return sum(count(body, set()) for body in bodies)


def test_int8_kernels_are_cast_once_before_the_loop_and_decode_the_same_tokens(model):
    from bigkeras.generation import int8_kernels_cast_once, make_bucketed_decode
    from bigkeras.serving import deployable

    int8 = deployable(model, quantize="int8")  # weight-only: Keras casts each int8 kernel in every call
    ids, mask = left_pad(PROMPTS)
    executor = make_generate_fn(int8, max_length=10, jit_compile=False)
    out = executor(ids, mask)["token_ids"].numpy()
    assert _int8_casts_in_loop_bodies(executor) == 0
    # The same steps as Keras' own int8 layers take them: a greedy loop of whole-model calls.
    for row, prompt in enumerate(PROMPTS):
        tokens = list(prompt)  # left-padded to 3 tokens: 7 new ones
        while len(tokens) < len(prompt) + 7:
            x = np.array([tokens], np.int32)
            tokens.append(int(np.argmax(np.asarray(int8({"token_ids": x, "padding_mask": np.ones_like(x)}))[0, -1])))
        np.testing.assert_array_equal(out[row, 3 - len(prompt):], tokens)
    xla = make_bucketed_decode(int8, max_length=10)(*left_pad(PROMPTS), tf.constant(7))["token_ids"].numpy()
    np.testing.assert_array_equal(xla[:, :10], out)
    # A sampler that advances a SeedGenerator keeps its casts in the loop: the scope would drop its updates.
    stateful = make_generate_fn(int8, max_length=10, jit_compile=False, sampler=keras_hub.samplers.TopKSampler(k=2))
    assert _int8_casts_in_loop_bodies(stateful) > 0
    # Any other variable update inside the scope fails loudly instead of being lost.
    with pytest.raises(RuntimeError, match="assigned the variable .*would be lost"):
        with int8_kernels_cast_once(int8, get_sampler("greedy")):
            int8.weights[-1].assign(int8.weights[-1])
