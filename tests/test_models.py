"""Module behaviour: shapes, the scanned vs unrolled stack, masks, dropout, remat, bfloat16."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config_base import model_config
from bert_jax.models import build_model, init_params
from bert_jax.models.attention import attention_bias
from bert_jax.models.encoder import scan_unroll, stack_layer_params, unstack_layer_params


def tiny(**kw):
    sizes = dict(vocab_size=50, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64, embedding_size=32)
    return model_config(**{**sizes, **kw})


def batch(length: int = 9):
    ids = jax.random.randint(jax.random.key(1), (2, length), 1, 50)
    mask = jnp.array([[1] * length, [1] * (length - 3) + [0] * 3])
    types = jnp.array([[0] * 4 + [1] * (length - 4), [0] * length])
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def test_output_shapes_and_heads():
    cfg = tiny(embedding_size=16)
    model = build_model(cfg)
    params = init_params(model, jax.random.key(0))
    out = model.apply({"params": params}, **batch())
    assert out.last_hidden_state.shape == (2, 9, 32)
    assert out.pooled_output.shape == (2, 32)
    assert out.mlm_logits.shape == (2, 9, 50)
    assert out.seq_relationship_logits.shape == (2, 2)
    assert params["embeddings"]["projection"]["kernel"].shape == (16, 32)
    assert params["encoder"]["layers"]["attention"]["query"]["kernel"].shape == (3, 32, 4, 8)
    assert "decoder" not in params["mlm_head"], "the decoder is tied to the word table"


@pytest.mark.parametrize("shared", [False, True])
def test_scanned_and_unrolled_stacks_agree(shared):
    scanned = build_model(tiny(share_layers=shared))
    unrolled = build_model(tiny(share_layers=shared, scan_layers=False))
    params = init_params(scanned, jax.random.key(0))
    unrolled_params = dict(params)
    if not shared:
        unrolled_params["encoder"] = unstack_layer_params(params["encoder"], 3)
        assert set(unrolled_params["encoder"]) == {"layers_0", "layers_1", "layers_2"}
        restacked = stack_layer_params(unrolled_params["encoder"], 3)
        assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), restacked, params["encoder"]))
    # the unrolled module initialises to the same tree structure it applies with
    assert jax.tree.structure(init_params(unrolled, jax.random.key(0))) == jax.tree.structure(unrolled_params)
    a = scanned.apply({"params": params}, **batch())
    b = unrolled.apply({"params": unrolled_params}, **batch())
    np.testing.assert_allclose(a.mlm_logits, b.mlm_logits, atol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_scan_unroll_keeps_the_parameters_and_the_outputs(shared):
    """scan_unroll changes the compiled program (a while loop or straight-line code), never the parameters."""
    rolled, straight = (build_model(tiny(share_layers=shared, scan_unroll=n)) for n in (1, 3))
    params = init_params(rolled, jax.random.key(0))
    assert jax.tree.structure(init_params(straight, jax.random.key(0))) == jax.tree.structure(params)

    inputs = batch()

    def loss(model, p):
        out = model.apply({"params": p}, **inputs, deterministic=False, rngs={"dropout": jax.random.key(1)})
        return (out.mlm_logits**2).mean()

    for model, loops in ((rolled, True), (straight, False)):  # deterministic: only the layer loop counts
        hlo = jax.jit(lambda p, model=model: model.apply({"params": p}, **inputs).mlm_logits).lower(params)
        assert (" while(" in hlo.compile().as_text()) == loops  # XLA removes the one-trip loop jax emits
    loss_rolled, grads_rolled = jax.jit(jax.value_and_grad(functools.partial(loss, rolled)))(params)
    loss_straight, grads_straight = jax.jit(jax.value_and_grad(functools.partial(loss, straight)))(params)
    np.testing.assert_allclose(loss_rolled, loss_straight, rtol=1e-6)  # the same dropout masks, too
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads_rolled, grads_straight)


def test_scan_unroll_auto_is_the_whole_stack_on_cpu_only():
    cfg = tiny()
    assert cfg.scan_unroll == 0
    assert (scan_unroll(cfg, "cpu"), scan_unroll(cfg, "tpu"), scan_unroll(cfg, "gpu")) == (3, 1, 1)
    with pytest.raises(ValueError, match="scan_unroll=4"):
        scan_unroll(tiny(scan_unroll=4))


def test_shared_layers_have_no_layer_axis():
    params = init_params(build_model(tiny(share_layers=True)), jax.random.key(0))
    assert params["encoder"]["layers"]["intermediate"]["kernel"].shape == (32, 64)


def test_padding_does_not_change_real_tokens():
    model = build_model(tiny())
    params = init_params(model, jax.random.key(0))
    b = batch()
    short = {k: v[1:, :6] for k, v in b.items()}
    out_padded = model.apply({"params": params}, **{k: v[1:] for k, v in b.items()})
    out_short = model.apply({"params": params}, **short)
    np.testing.assert_allclose(out_padded.last_hidden_state[:, :6], out_short.last_hidden_state, atol=1e-5)


def test_mask_kinds():
    mask = jnp.array([[1, 1, 1, 0]])
    keep = lambda kind, **kw: np.broadcast_to(np.asarray(attention_bias(mask, kind, **kw)[0, 0] == 0), (4, 4))
    assert keep("padding").tolist() == [[True, True, True, False]] * 4
    assert keep("causal")[1].tolist() == [True, True, False, False]
    prefix = keep("prefix", token_type_ids=jnp.array([[0, 0, 1, 1]]))
    assert prefix[0].tolist() == [True, True, False, False]  # source sees only the source
    assert prefix[2].tolist() == [True, True, True, False]  # target sees source + itself causally, no padding
    with pytest.raises(ValueError, match="unknown attention mask kind"):
        attention_bias(mask, "diagonal")


def test_causal_mask_ignores_the_future():
    model = build_model(tiny())
    params = init_params(model, jax.random.key(0))
    b = batch()
    changed = dict(b, input_ids=b["input_ids"].at[:, -1].set(7))
    run = lambda x: model.apply({"params": params}, **x, mask_kind="causal").last_hidden_state
    np.testing.assert_allclose(run(b)[:, :-1], run(changed)[:, :-1], atol=1e-5)


def test_dropout_is_random_only_when_asked():
    model = build_model(tiny())
    params = init_params(model, jax.random.key(0))
    det = model.apply({"params": params}, **batch()).last_hidden_state
    assert np.allclose(det, model.apply({"params": params}, **batch()).last_hidden_state)
    drop = lambda seed: (
        model.apply(
            {"params": params}, **batch(), deterministic=False, rngs={"dropout": jax.random.key(seed)}
        ).last_hidden_state
    )
    assert not np.allclose(drop(0), det)
    assert not np.allclose(drop(0), drop(1))


@pytest.mark.parametrize("policy", ["nothing_saveable", "dots_saveable"])
def test_remat_gives_the_same_gradients(policy):
    plain, remat = build_model(tiny()), build_model(tiny(remat_policy=policy))
    params = init_params(plain, jax.random.key(0))
    loss = lambda m: lambda p: jnp.sum(m.apply({"params": p}, **batch()).mlm_logits ** 2)
    g1, g2 = jax.grad(loss(plain))(params), jax.grad(loss(remat))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g1, g2)


def test_remat_policies_save_what_they_name(capsys):
    """What the scanned layers keep for the backward pass: nothing, the 4 Dense-style matmul outputs
    (fused query/key/value, attention output, intermediate, output), or those and the 2 attention matmuls.
    The matmuls run through a custom VJP that jax's own dots_saveable does not see; names make it see them."""

    def saved_by_layers(policy: str) -> int:
        model = build_model(tiny(remat_policy=policy))
        params = init_params(model, jax.random.key(0))
        f = lambda p: jnp.sum(model.apply({"params": p}, **batch()).last_hidden_state ** 2)
        jax.ad_checkpoint.print_saved_residuals(f, params)
        return sum("output of scan" in line for line in capsys.readouterr().out.splitlines())

    nothing = saved_by_layers("nothing_saveable")  # the layers' input carry only
    assert saved_by_layers("dots_with_no_batch_dims_saveable") == nothing + 4
    assert saved_by_layers("dots_saveable") == nothing + 6


def test_bfloat16_compute_keeps_float32_params():
    model = build_model(tiny(dtype="bfloat16"))
    params = init_params(model, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    out = model.apply({"params": params}, **batch())
    assert out.last_hidden_state.dtype == jnp.bfloat16
    ref = build_model(tiny()).apply({"params": params}, **batch())
    assert np.max(np.abs(np.asarray(out.last_hidden_state, np.float32) - ref.last_hidden_state)) < 0.1


def test_logical_axis_names_on_params():
    variables = build_model(tiny()).init(jax.random.key(0), batch()["input_ids"])
    names = jax.tree.map(lambda x: x.names, variables["params"], is_leaf=lambda x: hasattr(x, "names"))
    assert names["encoder"]["layers"]["attention"]["query"]["kernel"] == ("layers", "embed", "heads", "kv")
    assert names["embeddings"]["word_embeddings"]["embedding"] == ("vocab", "embed")


def test_masked_positions_gather_mlm_logits():
    model = build_model(tiny())
    params = init_params(model, jax.random.key(0))
    positions = jnp.array([[0, 3], [5, 5]])
    full = model.apply({"params": params}, **batch()).mlm_logits
    gathered = model.apply({"params": params}, **batch(), masked_positions=positions).mlm_logits
    assert gathered.shape == (2, 2, 50)
    np.testing.assert_allclose(
        gathered, np.take_along_axis(np.asarray(full), np.asarray(positions)[..., None], 1), atol=1e-5
    )


def test_gelu_exact_is_the_reference_gelu_and_its_gradient():
    """The erf form (fast on XLA:CPU) is jax's erfc form and torch's gelu, values and derivatives."""
    torch = pytest.importorskip("torch")
    from bert_jax.models.common import gelu_exact

    x = np.linspace(-12.0, 12.0, 48001, dtype=np.float32)
    ours = np.asarray(gelu_exact(jnp.asarray(x)))
    np.testing.assert_allclose(ours, np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False)), atol=2e-6, rtol=0)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.gelu(xt)
    ref.sum().backward()
    np.testing.assert_allclose(ours, ref.detach().numpy(), atol=2e-6, rtol=0)
    grad = np.asarray(jax.grad(lambda v: gelu_exact(v).sum())(jnp.asarray(x)))
    np.testing.assert_allclose(grad, xt.grad.numpy(), atol=2e-6, rtol=0)
    assert gelu_exact(jnp.ones(4, jnp.bfloat16)).dtype == jnp.bfloat16  # no promotion of the compute dtype


def test_gelu_exact_in_bfloat16_is_the_float32_gelu_rounded_once():
    """In bf16 the value and the gradient are the float32 ones rounded to bf16 once, as torch's bf16 gelu."""
    from bert_jax.models.common import gelu_exact

    x = jnp.linspace(-6.0, 6.0, 4001).astype(jnp.bfloat16)
    wide = x.astype(jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(gelu_exact(x), np.float32), np.asarray(gelu_exact(wide).astype(jnp.bfloat16), np.float32)
    )
    g = jnp.cos(wide).astype(jnp.bfloat16)  # a cotangent that is not all ones
    grad = jax.vjp(gelu_exact, x)[1](g)[0]
    grad_wide = jax.vjp(gelu_exact, wide)[1](g.astype(jnp.float32))[0]
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(grad_wide.astype(jnp.bfloat16), np.float32))
