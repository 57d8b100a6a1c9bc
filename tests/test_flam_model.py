"""FlamModel heads, initial values, ablation switches and frame scores (small sizes)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flam_jax.config import base_config
from flam_jax.errors import ConfigError, InputError
from flam_jax.export.weights import weight_shapes
from flam_jax.models.configs import HTSAT_CONFIGS, TextConfig
from flam_jax.models.flam import FlamModel, build_model, frame_scores, normalize

SMALL_TEXT = TextConfig(
    vocab_size=60,
    hidden=32,
    layers=1,
    heads=4,
    ffn=64,
    max_positions=90,
    type_vocab=1,
    pad_id=1,
    style="roberta",
    layer_norm_eps=1e-5,
)


def small_model(**kwargs) -> FlamModel:
    return FlamModel(HTSAT_CONFIGS["demo"], SMALL_TEXT, embed_dim=16, rngs=nnx.Rngs(0), **kwargs)


@nnx.jit
def embed_text(model, ids, mask):
    return model.embed_text(ids, mask)


@nnx.jit
def embed_audio_parts(model, wave):
    """(frames, global_, pre-projection features) in one compiled call."""
    frames, global_ = model.embed_audio(wave)
    return frames, global_, model.audio(wave)


def _text_inputs():
    ids = np.array([[0, 5, 9, 2, 1, 1], [0, 7, 8, 11, 12, 2], [0, 3, 2, 1, 1, 1]], np.int32)
    return ids, (ids != 1).astype(np.int32)


def test_initial_temperature_scale_and_bias():
    model = small_model()
    assert float(model.logit_scale[...]) == pytest.approx(math.log(1 / 0.07))
    emb, alpha, beta = embed_text(model, *_text_inputs())
    assert emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-6)
    # The heads start near α = 10 and β = -8 (small default-init MLP outputs on top).
    assert np.all(np.abs(np.log(np.asarray(alpha)) - math.log(10)) < 1.0)
    assert np.all(np.abs(np.asarray(beta) + 8) < 1.0)
    assert float(jnp.std(alpha)) > 0  # per text, not a constant


def test_torch_default_init_bounds():
    model = small_model()
    for layer, fan_in in ((model.audio_projection.fc1, 256), (model.text_projection.fc1, 32)):
        bound = 1 / math.sqrt(fan_in)
        kernel, bias = np.asarray(layer.kernel[...]), np.asarray(layer.bias[...])
        assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
        assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound


@pytest.mark.parametrize("scale,bias", [(False, True), (True, False), (False, False)])
def test_ablation_switches_share_one_learned_term_across_texts(scale, bias):
    model = small_model(per_text_scale=scale, per_text_bias=bias)
    names = weight_shapes(model)
    assert any(k.startswith("scale_head.") for k in names) == scale
    assert any(k.startswith("bias_head.") for k in names) == bias
    assert ("shared_log_scale" in names) != scale and ("shared_bias" in names) != bias
    _, alpha, beta = embed_text(model, *_text_inputs())
    assert alpha.dtype == beta.dtype == np.float32
    if not scale:
        np.testing.assert_allclose(alpha, 10.0, rtol=1e-6)  # the head's initial value, every text
    if not bias:
        np.testing.assert_array_equal(beta, -8.0)
    # The shared terms are parameters: a step of SGD on a loss of α and β moves them.
    grads = nnx.grad(lambda m: sum(x.sum() for x in embed_text(m, *_text_inputs())[1:]))(model)
    leaves = dict(nnx.to_flat_state(grads))
    for name, on in (("shared_log_scale", not scale), ("shared_bias", not bias)):
        if on:
            assert float(leaves[(name,)][...]) != 0.0


def test_global_is_projected_mean_of_frames_not_mean_of_projected():
    model = small_model()
    # 1 s is stretched to the same 32 frames as 10 s, at a tenth of the STFT cost.
    wave = 0.1 * np.random.default_rng(0).standard_normal((2, 48000)).astype(np.float32)
    frames, global_, features = embed_audio_parts(model, wave)
    assert frames.shape == (2, 32, 16) and global_.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(frames, axis=-1), 1.0, atol=1e-5)
    expected = normalize(model.audio_projection(features.mean(axis=1)))
    np.testing.assert_allclose(global_, expected, atol=1e-6)
    assert not np.allclose(global_, normalize(frames.mean(axis=1)), atol=1e-3)


def test_frame_scores_formulas():
    rng = np.random.default_rng(0)
    frames = normalize(jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32))
    emb = normalize(jnp.asarray(rng.standard_normal((3, 8)), jnp.float32))
    alpha = jnp.array([10.0, 3.0, 30.0])
    beta = jnp.array([-8.0, 0.0, -12.0])
    cos = np.einsum("bfd,nd->bnf", frames, emb)
    z = alpha[None, :, None] * cos + beta[None, :, None]
    p, q = jax.nn.sigmoid(z), jax.nn.sigmoid(beta)[None, :, None]
    np.testing.assert_allclose(frame_scores(frames, emb, alpha, beta), p / (p + q), atol=1e-6)
    np.testing.assert_allclose(
        frame_scores(frames, emb, alpha, beta, "approximate"),
        jax.nn.sigmoid(z - beta[None, :, None]),
        atol=1e-6,
    )
    # s = 0.5 at cos = 0 and s < 1/(1+σ(β)).
    zero = frame_scores(
        jnp.zeros((1, 1, 8)).at[..., 0].set(1.0), jnp.zeros((1, 8)).at[0, 1].set(1.0), alpha[:1], beta[:1]
    )
    assert float(zero[0, 0, 0]) == pytest.approx(0.5)
    big = frame_scores(frames[:, :, :], emb, jnp.full((3,), 1e4), beta)
    assert np.all(np.asarray(big) <= 1 / (1 + np.asarray(jax.nn.sigmoid(beta)))[None, :, None] + 1e-6)
    assert np.isfinite(np.asarray(big)).all()
    with pytest.raises(InputError, match="method"):
        frame_scores(frames, emb, alpha, beta, "biased")


def test_normalize_guards_zero_vectors():
    out = normalize(jnp.zeros((2, 4)))
    assert np.isfinite(np.asarray(out)).all() and float(jnp.abs(out).max()) == 0.0


def test_bf16_compute_close_to_fp32():
    ids, mask = _text_inputs()
    fp32 = small_model()
    bf16 = small_model(compute_dtype="bfloat16")
    nnx.update(bf16, nnx.state(fp32, nnx.Param))
    e32, _, _ = embed_text(fp32, ids, mask)
    e16, a16, _ = embed_text(bf16, ids, mask)
    assert e16.dtype == jnp.float32 and a16.dtype == jnp.float32
    np.testing.assert_allclose(e16, e32, atol=3e-2)


def test_build_model_rejects_unknown_names():
    cfg = base_config().model
    cfg.audio_size = "huge"
    with pytest.raises(ConfigError, match="audio_size"):
        build_model(cfg, rngs=nnx.Rngs(0))
    cfg = base_config().model
    cfg.text_tower = "gpt"
    with pytest.raises(ConfigError, match="text_tower"):
        build_model(cfg, rngs=nnx.Rngs(0))
    cfg = base_config().model
    cfg.remat = "everything"
    with pytest.raises(ConfigError, match="remat"):
        build_model(cfg, rngs=nnx.Rngs(0))


def test_build_model_shapes_from_config():
    cfg = base_config().model
    cfg.audio_size, cfg.text_tower, cfg.per_text_bias = "demo", "minilm-l6", False
    model = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    shapes = weight_shapes(model)
    assert shapes["text.word_embeddings.embedding"] == (30522, 384)
    assert shapes["scale_head.fc1.kernel"] == (384, 384)
    assert shapes["audio_projection.fc1.kernel"] == (256, 512)
    assert not any(k.startswith("bias_head") for k in shapes)


@pytest.mark.parametrize("remat", ["block", "block_save_dots"])
def test_text_remat_same_gradients_and_trains_with_dropout(remat):
    from flam_jax.models.text import TextEncoder

    ids, mask = _text_inputs()
    plain = TextEncoder(SMALL_TEXT, rngs=nnx.Rngs(0))
    checkpointed = TextEncoder(SMALL_TEXT, rngs=nnx.Rngs(0), remat=remat)

    @nnx.jit(static_argnums=1)
    def grads(model, train):
        return nnx.grad(lambda m: jnp.sum(m(ids, mask, train=train) ** 2))(model)

    ref, got = grads(plain, False), grads(checkpointed, False)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    trained = grads(checkpointed, True)  # dropout inside the rematerialised layers
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trained))
    first = float(jnp.sum(checkpointed(ids, mask, train=True)))
    assert first != float(jnp.sum(checkpointed(ids, mask, train=True)))  # fresh dropout masks
