"""Starting weights from an export (``train.init_from``), whole or in part (``train.init_include``,
``train.init_exclude``) with its report, and the cosine frame scores a FLAM-Global model is
evaluated with."""

import numpy as np
import pytest
from infer_fixtures import make_export, model_config

HEADS = r"^(scale_head|bias_head)/"


def _config(export: str, per_text: bool, exclude: str = "", include: str = ""):
    from flam_jax.config import base_config

    config = base_config()
    config.model = model_config()
    config.model.per_text_scale = config.model.per_text_bias = per_text
    config.model.text_weights = ""
    config.train.init_from = export
    config.train.init_exclude = exclude
    config.train.init_include = include
    return config


def _abstract(config):
    from flax import nnx

    from flam_jax.models.flam import build_model
    from flam_jax.models.names import param_name

    model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    shapes = {
        param_name(path): tuple(var.get_value().shape) for path, var in nnx.to_flat_state(nnx.state(model))
    }
    return model, shapes


def _plan(config):
    from flam_jax.train.init import plan_initial_weights

    model, shapes = _abstract(config)
    return plan_initial_weights(config, model, shapes), shapes


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export"))


def test_an_ablation_starts_from_a_per_text_export_without_its_heads(export):
    from flam_jax.export.export_dir import read_params

    (weights, report), names = _plan(_config(export, per_text=False, exclude=HEADS))
    stored = read_params(f"{export}/params.safetensors")
    # Everything but the per-text heads, which the ablation replaces by two shared scalars.
    assert set(weights) == {
        n.replace(".", "/") for n in stored if not n.startswith(("scale_head", "bias_head"))
    }
    assert set(weights) <= set(names) and {"shared_log_scale", "shared_bias"} <= set(names) - set(weights)
    np.testing.assert_array_equal(weights["logit_scale"], stored["logit_scale"])
    assert report.loaded == sorted(weights) and {"shared_log_scale", "shared_bias"} <= set(report.fresh)
    assert set(report.unused.values()) == {"matched by train.init_exclude"}
    # Without the exclusion the heads are names the ablation lacks: reported unused.
    (same, report), _ = _plan(_config(export, per_text=False))
    assert same.keys() == weights.keys()
    assert report.unused and set(report.unused.values()) == {"not in the model"}
    assert all(n.startswith(("scale_head", "bias_head")) for n in report.unused)


def test_only_the_included_part_is_loaded_and_the_report_says_what_stayed_fresh(export):
    import json

    (weights, report), names = _plan(_config(export, per_text=True, include="^audio/"))
    assert weights and all(n.startswith("audio/") for n in weights)
    assert set(report.fresh) == set(names) - set(weights) and any(n.startswith("text/") for n in report.fresh)
    assert all(reason == "not matched by train.init_include" for reason in report.unused.values())
    line = report.summary()
    assert line.startswith(f"initial weights from {export}: loaded {len(weights)} (audio {len(weights)});")
    assert f"unused in the file {len(report.unused)}" in line
    assert json.loads(report.to_json())["loaded"] == sorted(weights)


def test_a_shape_mismatch_names_the_parameter(export):
    from flam_jax.errors import CheckpointError
    from flam_jax.train.init import plan_initial_weights

    config = _config(export, per_text=True)
    model, shapes = _abstract(config)
    shapes["logit_scale"] = (2,)
    with pytest.raises(
        CheckpointError, match=r"^initial weight logit_scale has shape \(\), the model needs \(2,\)$"
    ):
        plan_initial_weights(config, model, shapes)
    with pytest.raises(CheckpointError, match="no weight of .* is a variable of this model"):
        plan_initial_weights(config, model, {"other/kernel": (3,)})


@pytest.mark.parametrize(
    "key, pattern, message",
    [
        ("exclude", "(", "train.init_exclude: bad regex"),
        ("exclude", "^no_such_layer/", "train.init_exclude regex '\\^no_such_layer/' matches no weight of"),
        ("include", "^no_such_layer/", "train.init_include regex .* matches no weight of"),
    ],
)
def test_a_bad_or_empty_regex_is_one_line(export, key, pattern, message):
    from flam_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _plan(_config(export, per_text=True, **{key: pattern}))


def test_an_exclusion_without_an_export_is_refused_by_the_config():
    from flam_jax.config import base_config, validate
    from flam_jax.errors import ConfigError

    config = base_config()
    config.train.init_exclude = HEADS
    with pytest.raises(ConfigError, match="train.init_exclude needs train.init_from"):
        validate(config)
    config.train.init_exclude, config.train.init_include = "", "^audio/"
    with pytest.raises(ConfigError, match="train.init_include needs train.init_from"):
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
