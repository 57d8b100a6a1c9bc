"""Starting weights from an export (``train.init_from``), with parts left fresh (``train.init_exclude``),
and the cosine frame scores a FLAM-Global model is evaluated with."""

import numpy as np
import pytest
from infer_fixtures import make_export, model_config

HEADS = r"^(scale_head|bias_head)/"


def _config(export: str, per_text: bool, exclude: str = ""):
    from flam_jax.config import base_config

    config = base_config()
    config.model = model_config()
    config.model.per_text_scale = config.model.per_text_bias = per_text
    config.model.text_weights = ""
    config.train.init_from = export
    config.train.init_exclude = exclude
    return config


def _abstract(config):
    from flax import nnx

    from flam_jax.models.flam import build_model
    from flam_jax.models.names import param_name

    model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    names = {param_name(path) for path, _ in nnx.to_flat_state(nnx.state(model))}
    return model, names


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export"))


def test_an_ablation_starts_from_a_per_text_export_without_its_heads(export):
    from flam_jax.export.export_dir import read_params
    from flam_jax.train.init import initial_weights

    config = _config(export, per_text=False, exclude=HEADS)
    model, names = _abstract(config)
    weights = initial_weights(config, model)
    stored = read_params(f"{export}/params.safetensors")
    # Everything but the per-text heads, which the ablation replaces by two shared scalars.
    assert set(weights) == {
        n.replace(".", "/") for n in stored if not n.startswith(("scale_head", "bias_head"))
    }
    assert set(weights) <= names and {"shared_log_scale", "shared_bias"} <= names - set(weights)
    np.testing.assert_array_equal(weights["logit_scale"], stored["logit_scale"])
    # Without the exclusion the heads would name variables the ablation does not have.
    unknown = set(initial_weights(_config(export, per_text=False), model)) - names
    assert unknown and all(n.startswith(("scale_head", "bias_head")) for n in unknown)


@pytest.mark.parametrize(
    "exclude, message",
    [("(", "train.init_exclude: bad regex"), ("^no_such_layer/", "matches no weight of")],
)
def test_a_bad_or_empty_exclusion_is_one_line(export, exclude, message):
    from flam_jax.errors import ConfigError
    from flam_jax.train.init import initial_weights

    config = _config(export, per_text=True, exclude=exclude)
    with pytest.raises(ConfigError, match=message):
        initial_weights(config, _abstract(config)[0])


def test_an_exclusion_without_an_export_is_refused_by_the_config():
    from flam_jax.config import base_config, validate
    from flam_jax.errors import ConfigError

    config = base_config()
    config.train.init_exclude = HEADS
    with pytest.raises(ConfigError, match="train.init_exclude needs train.init_from"):
        validate(config)


def test_cosine_frame_scores_are_the_cosine_mapped_to_the_unit_interval():
    import jax.numpy as jnp

    from flam_jax.models.flam import frame_scores

    rng = np.random.default_rng(0)
    frames = rng.standard_normal((2, 5, 8)).astype(np.float32)
    frames /= np.linalg.norm(frames, axis=-1, keepdims=True)
    text = rng.standard_normal((3, 8)).astype(np.float32)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    alpha, beta = jnp.full(3, 10.0), jnp.full(3, -8.0)
    got = np.asarray(frame_scores(frames, text, alpha, beta, "cosine"))
    want = (1 + np.einsum("bfd,nd->bnf", frames, text)) / 2
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1
    # α and β play no part: a FLAM-Global model never trained them.
    np.testing.assert_array_equal(got, np.asarray(frame_scores(frames, text, alpha * 3, beta + 5, "cosine")))


def test_flam_evaluate_refuses_an_unknown_method_before_loading(capsys):
    from flam_jax.cli.evaluate import main

    argv = ["--model=/nonexistent", "--benchmark=simulated", "--data-dir=/nonexistent", "--method=cos"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().startswith("error: method must be one of 'unbiased'")
