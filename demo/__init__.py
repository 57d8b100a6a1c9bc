"""``make demo``: the repository's end-to-end demonstration (``demo.run`` says what it does)."""
