"""Writes to the features app's tables, one module per concern:

- ``ingestion``: price and fundamentals files into the market-data tables
- ``feature_store``: feature sets, materialization to the offline store, the online store
- ``market_updates``: daily updates from data providers, universe sync
- ``news``: news items and their sentiment, daily sentiment per ticker
"""
