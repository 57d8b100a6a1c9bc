"""The data preparation scripts: tokenizer training and the demo corpus's caption/split logic."""

import importlib.util
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")


def script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "data", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_tokenizer_on_a_manifest_and_a_csv(tmp_path, capsys):
    from flam_jax.data.tokenizers import load_tokenizer

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    corpus = tmp_path / "extra.txt"
    words = ["dog", "cat", "bird", "rain", "engine", "door", "bell", "horn", "water", "wind"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 4)) for _ in range(300)))
    module = script("train_tokenizer")
    code = module.main(
        [
            f"--corpus={fixtures}/clips/manifest.jsonl",
            f"--corpus={fixtures}/clotho/clotho_captions_development.csv",
            f"--corpus={corpus}",
            f"--out={tmp_path / 'tok'}",
            "--vocab-size=60",
        ]
    )
    assert code == 0 and "trained on 312 captions" in capsys.readouterr().out
    tokenizer = load_tokenizer(str(tmp_path / "tok" / "spm.model"), context_length=12)
    ids, mask = tokenizer.encode(["A dog barks", "rain and wind", "bell"])
    assert ids.shape == (3, 12) and ids.dtype == np.int32
    assert mask[0].sum() >= 4 and mask[2].sum() == 3  # BOS, one piece, EOS
    assert ids[0, 0] == 2 and np.all(ids[mask == 0] == 0)
    assert module.main([f"--corpus={tmp_path / 'missing.txt'}", f"--out={tmp_path}"]) == 2
