"""Train a sentencepiece tokenizer on a caption corpus.

    python data/train_tokenizer.py --corpus=captions.txt [--corpus=manifest.jsonl ...] \
        --out=DIR [--vocab-size=8000]

Corpus files: ``.txt`` (one caption per line), ``.jsonl`` (a ``captions`` list or
``caption`` string per line, e.g. a clips manifest) or ``.csv`` (every column whose
name starts with ``caption``: AudioCaps, Clotho). Writes ``DIR/spm.model`` (+ ``.vocab``)
with ids pad 0, unk 1, bos 2, eos 3, readable by ``flam_jax.data.tokenizers.load_tokenizer``.
"""

import argparse
import csv
import json
import os
import sys

from flam_jax.cli import report_errors
from flam_jax.errors import DataError


def read_captions(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"caption corpus not found: {path}")
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith(".jsonl"):
            out = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not JSON") from err
                captions = entry.get("captions", entry.get("caption", []))
                # As in the clips manifest, one string may hold several captions split by "|".
                out.extend(captions.split("|") if isinstance(captions, str) else captions)
            return [c.strip() for c in out if c.strip()]
        if path.endswith(".csv"):
            rows = list(csv.DictReader(f))
            return [v.strip() for r in rows for k, v in r.items() if k and k.startswith("caption") and v]
        return [line.strip() for line in f if line.strip()]


def train(captions: list[str], out_dir: str, vocab_size: int) -> str:
    import sentencepiece

    if not captions:
        raise DataError("the caption corpus is empty")
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, "spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,  # small corpora cannot fill a large vocabulary
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        normalization_rule_name="nmt_nfkc_cf",  # NFKC + lower case: captions' case carries nothing
        minloglevel=2,
    )
    return prefix + ".model"


@report_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", action="append", required=True, help="caption file (repeatable)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    captions = [c for path in args.corpus for c in read_captions(path)]
    model = train(captions, args.out, args.vocab_size)
    print(f"trained on {len(captions)} captions -> {model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
