"""Writes to the features app's tables, one module per concern:

- ``ingestion``: price and fundamentals files into the market-data tables
- ``feature_store``: feature sets, materialization to the offline store, the online store
- ``market_updates``: daily bar updates from data providers (``provider_config``: the providers as configured)
- ``intraday_quotes``: the session so far from a provider's snapshot endpoint
- ``universe_sync``: the exchanges' symbol directories into ``Ticker``
- ``news``: news items and their sentiment, daily sentiment per ticker
"""
