"""flam_jax: a JAX/Flax training codebase for FLAM (frame-wise language-audio modeling).

The package is organised by the data's journey: ``audio`` (decoding and the
log-mel front end) feeds ``models`` (HTS-AT, the text tower and FLAM's heads);
``losses`` and ``data`` serve ``train``; ``evals``, ``infer`` and ``export``
sit on top. Modules import downward only.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # The inference class pulls in the model stack; import it only when asked
    # so that `import flam_jax` stays cheap for the CLIs and the tests.
    if name == "FLAM":
        from flam_jax.infer.api import FLAM

        return FLAM
    raise AttributeError(f"module 'flam_jax' has no attribute {name!r}")
