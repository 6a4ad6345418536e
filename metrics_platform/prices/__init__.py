"""Model prices as data: the genai-prices dataset plus local overrides, effective-dated.

``entries`` turns the dataset into price entries (one per model and date range), ``overrides``
reads the repository's overrides file, ``names`` resolves the model names spans carry,
``load`` writes prices and name aliases to ClickHouse (the finalizer prices every LLM span with
them, see sql/0011), ``recompute`` reprices past days after a price change.
"""
