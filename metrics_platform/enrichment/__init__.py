"""Reference data that turns raw spans into business answers: who pays for a call, which flags were on.

Billing accounts (user_id_hash -> account, plan) and feature flags (agent or route -> flag ->
enabled/variant) are read from a CSV, JSON or JSON Lines file, or an http(s) URL, validated row by
row and loaded into ClickHouse join tables. A bad row is rejected with its line (or item) and
reason and the good rows still load; a source that cannot be read at all, or has no valid row,
changes nothing. Each load replaces its table atomically (``metrics_platform.table_swap``).

* ``sources``: reading a file or URL and detecting its format; ``SourceError``.
* ``records``: CSV/JSON/JSON Lines records, validated one by one into rows and rejects.
* ``loads``: replacing a dataset's table and recording the load in ``enrichment_loads``.
* ``billing``: billing accounts, ``user_hash`` and the demo's sample accounts.
* ``flags``: feature flags.
* ``cost``: ``cost_by_account_daily``, recomputed from raw events and the current accounts.
"""
