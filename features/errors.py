"""Errors of the features stage: the feature repo, the store and the online reader."""

from __future__ import annotations

from streams.errors import StreamscoreError


class FeatureStoreError(StreamscoreError):
    """The feature store is misconfigured or failed; the message names the stage and cause.

    Not a ``BadInput``: a store that cannot answer affects every event, so the worker stops
    loudly rather than dead-lettering the whole stream.
    """
