"""The error the feature store's services raise when a call cannot run as asked (their callers, the
commands and the pipeline stages, catch it)."""


class FeatureStoreError(Exception):
    """A build or export that cannot run as asked (unknown ticker or feature set, bad dates, no bars)."""
