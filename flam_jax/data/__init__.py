"""Data: tokenizers, TFDS ArrayRecord builders, the mixture simulator, batches and the Grain pipeline.

Source audio is built once into ArrayRecord files by ``builders``; ``simulate`` turns
(seed, index) into a 10 s mixture with exact frame labels; ``batches`` assembles the SED
and global batches with fixed shapes; ``pipeline`` wires them into a checkpointable,
host-sharded Grain iterator. ``tokenizers`` gives one interface over RoBERTa BPE, HF
tokenizer.json and sentencepiece.
"""
