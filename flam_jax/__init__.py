"""flam_jax: a JAX/Flax training codebase for FLAM (frame-wise language-audio modeling).

The package is organised by the data's journey, in layers that import downward only
(``tests/test_layering.py`` holds the order and enforces it): ``errors``, ``paths`` and
``timeline`` (48 kHz, 10 s windows, the frame grid) at the bottom; ``audio`` (decoding
and the log-mel front end); ``models`` and ``losses``; ``data``; ``train``, ``evals``
and ``export``; ``infer``; and ``cli``, the console scripts, on top.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # The inference class pulls in the model stack; import it only when asked
    # so that `import flam_jax` stays cheap for the CLIs and the tests.
    if name == "FLAM":
        from flam_jax.infer.api import FLAM

        return FLAM
    raise AttributeError(f"module 'flam_jax' has no attribute {name!r}")
