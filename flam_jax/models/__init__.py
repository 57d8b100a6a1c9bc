"""Models: the HTS-AT audio tower, the BERT-family text tower and FLAM's heads, in Flax NNX.

``configs`` holds frozen size dataclasses (tiny/base/large/base-12hz HTS-AT, RoBERTa,
MiniLM); ``htsat`` the Swin audio encoder with its 32-frame head; ``text`` the text
encoder with pooler; ``flam`` the projections, per-text scale/bias heads and the CLIP
temperature. Models import only ``flam_jax.audio``; never data, losses or train.
"""
