"""Loss, optimizer pieces and mesh helpers (fast, single device)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from emopillars_jax import sharding as shd
from emopillars_jax.errors import ConfigError
from emopillars_jax.train_config import OptimConfig
from emopillars_jax.training import balanced_class_weights, bce_loss, build_optimizer, \
    decay_mask, learning_rate_schedule, param_groups


def test_bce_soft_targets_class_weights_and_padding_rows():
    logits = jnp.array([[2.0, -1.0], [0.5, 0.5], [9.0, 9.0]])
    targets = jnp.array([[1.0, 0.0], [0.3, 0.8], [0.0, 0.0]])
    weights = jnp.array([1.0, 1.0, 0.0])      # the last row is padding
    def bce(x, t):
        return -(t * np.log(1 / (1 + np.exp(-x))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-x))))
    rows = [bce(np.asarray(logits[i]), np.asarray(targets[i])) for i in range(2)]
    assert float(bce_loss(logits, targets, weights)) == pytest.approx(
        np.mean([r.mean() for r in rows]), rel=1e-5)
    cw = jnp.array([2.0, 0.5])
    assert float(bce_loss(logits, targets, weights, cw)) == pytest.approx(
        np.mean([(r * np.array([2.0, 0.5])).mean() for r in rows]), rel=1e-5)
    # bf16 logits are scored in float32
    assert bce_loss(logits.astype(jnp.bfloat16), targets, weights).dtype == jnp.float32


def test_balanced_class_weights_upweight_rare_classes():
    t = np.zeros((100, 3), np.float32)
    t[:50, 0] = 1
    t[:5, 1] = 1
    w = balanced_class_weights(t)
    assert w[1] > w[0] and w[2] == 1.0      # unseen class keeps weight 1


def test_schedule_warmup_then_decay():
    cfg = OptimConfig(lr=1e-3, warmup_ratio=0.1, schedule="linear")
    s = learning_rate_schedule(cfg, 100)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1e-3)
    assert float(s(55)) == pytest.approx(0.5e-3, rel=1e-3) and float(s(100)) == pytest.approx(0)
    c = learning_rate_schedule(OptimConfig(lr=1e-3, warmup_ratio=0.1, schedule="cosine"), 100)
    assert float(c(10)) == pytest.approx(1e-3) and float(c(55)) == pytest.approx(0.5e-3, rel=1e-2)


def test_no_weight_decay_on_biases_and_norms_and_head_lr_multiplier():
    params = {"layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
              "norm": {"scale": jnp.ones(2)}, "head": {"kernel": jnp.ones((2, 2))}}
    assert decay_mask(params) == {"layer": {"kernel": True, "bias": False},
                                  "norm": {"scale": False}, "head": {"kernel": True}}
    assert param_groups(params)["head"]["kernel"] == "head"
    zero = jax.tree.map(jnp.zeros_like, params)
    cfg = OptimConfig(lr=0.1, weight_decay=0.5, warmup_ratio=0.0, schedule="constant",
                      clip_norm=None)
    tx = build_optimizer(cfg, 10)
    upd, _ = tx.update(zero, tx.init(params), params)
    # zero gradients: only decoupled weight decay moves matrices; biases / norms stay
    assert float(upd["layer"]["kernel"][0, 0]) == pytest.approx(-0.1 * 0.5)
    assert float(jnp.abs(upd["layer"]["bias"]).max()) == 0.0
    assert float(jnp.abs(upd["norm"]["scale"]).max()) == 0.0
    tx = build_optimizer(cfg.model_copy(update={"head_lr_multiplier": 10.0}), 10)
    upd, _ = tx.update(zero, tx.init(params), params)
    assert float(upd["head"]["kernel"][0, 0]) == pytest.approx(-1.0 * 0.5)


def test_gradient_accumulation_applies_every_k_steps():
    cfg = OptimConfig(lr=0.1, weight_decay=0.0, warmup_ratio=0.0, schedule="constant",
                      grad_accum=2, clip_norm=None)
    tx = build_optimizer(cfg, 10)
    p = {"w": jnp.ones(3)}
    state = tx.init(p)
    upd, state = tx.update({"w": jnp.ones(3)}, state, p)
    assert float(jnp.abs(upd["w"]).max()) == 0.0          # accumulating
    upd, state = tx.update({"w": jnp.ones(3)}, state, p)
    assert float(upd["w"][0]) == pytest.approx(-0.1, rel=1e-3)


def test_mesh_shape_fill_and_errors_and_logical_specs():
    assert shd.mesh_shape({"data": -1, "tensor": 2}, 8) == {"data": 4, "tensor": 2}
    with pytest.raises(ConfigError, match="at most one -1"):
        shd.mesh_shape({"data": -1, "tensor": -1}, 8)
    with pytest.raises(ConfigError, match="needs 6 devices"):
        shd.mesh_shape({"data": 3, "tensor": 2}, 8)
    with pytest.raises(ConfigError, match="not divisible"):
        shd.mesh_shape({"data": -1, "tensor": 3}, 8)

    class FakeMesh:   # logical_to_spec reads only .shape
        shape = {"data": 4, "fsdp": 1, "tensor": 2}
    rules = {"vocab": "tensor", "embed": "fsdp", "mlp": "tensor", "batch": ["data", "fsdp"]}
    P = jax.sharding.PartitionSpec
    assert shd.logical_to_spec(("embed", "mlp"), (8, 6), rules, FakeMesh) == P(None, "tensor")
    # 30523 rows do not split over 2 devices: replicated rather than an error
    assert shd.logical_to_spec(("vocab", "embed"), (30523, 8), rules, FakeMesh) == P()
    # one mesh axis shards one dimension only
    assert shd.logical_to_spec(("mlp", "mlp"), (4, 4), rules, FakeMesh) == P("tensor")
    assert shd.logical_to_spec(None, (3,), rules, FakeMesh) == P()


def test_like_params_lays_out_optimizer_moments_like_parameters():
    mesh = shd.make_mesh({"data": 1})
    params = {"a": {"kernel": jnp.ones((2, 3))}, "b": jnp.ones(4)}
    sh = {"a": {"kernel": "K"}, "b": "B"}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, mask=decay_mask))
    out = shd.like_params(jax.eval_shape(tx.init, params), params, sh, "R")
    leaves = jax.tree.leaves(out)
    assert leaves.count("K") == 2 and leaves.count("B") == 2 and "R" in leaves
    assert mesh.shape["data"] == 1
