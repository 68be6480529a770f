"""Writes to the features app's tables, one module per concern:

- ``ingestion``: price and fundamentals files into the market-data tables
- ``feature_store``: builds into the offline store (each a ``FeatureMaterialization``) and exports from it;
  ``build_inputs`` what a build reads, ``feature_set_versions`` the versions it writes to,
  ``online_store`` the latest vectors in the cache, ``benchmark_returns`` the benchmark's daily returns,
  ``store_errors`` the error they raise
- ``market_updates``: daily bar updates from data providers (``provider_config``: the providers as configured)
- ``intraday_quotes``: the session so far from a provider's snapshot endpoint
- ``universe_sync``: the exchanges' symbol directories into ``Ticker``
- ``news``: news items and their sentiment, daily sentiment per ticker
"""
