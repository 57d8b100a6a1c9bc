"""Models: the HTS-AT audio tower, the BERT-family text tower and FLAM's heads, in Flax NNX.

``configs`` holds frozen size dataclasses (tiny/base/large/base-12hz/demo HTS-AT,
RoBERTa, MiniLM) and the remat policies; ``htsat`` the Swin audio encoder with its
32-frame head; ``text`` the text encoder with pooler; ``flam`` the projections, per-text
scale/bias heads and the CLIP temperature; ``names`` the two spellings of parameter
names. Models import only the layers below them (``errors``, ``audio``); never data,
losses or train.
"""
