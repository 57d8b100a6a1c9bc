"""TFDS builders (array_record, no TensorFlow) for clips, strongly labelled SED sets,
retrieval pairs and classification sets, each reading a local manual directory."""
