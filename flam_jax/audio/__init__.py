"""Audio: decoding files to 48 kHz mono (``io``) and FLAM's front end in JAX (``frontend``).

The front end turns a (B, 480000) waveform into the 1x256x256 log-mel image that
HTS-AT consumes: STFT power, Slaney mel, log, BatchNorm over mel bins, frequency-only
SpecAugment in training, the bicubic stretch to 1024 frames and the chunk-major fold.
Nothing here knows about models, losses or training.
"""
