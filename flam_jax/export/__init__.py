"""Export and conversion: training workdir -> export directory, StableHLO via jax.export,
and converters from openflam checkpoints and Hugging Face BERT/RoBERTa weights."""
