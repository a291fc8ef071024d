"""The stream layer's error hierarchy. The agent picks a policy by type:
``BadInput`` becomes a dead-letter record; anything else stops the worker loudly
(``streams.runtime.lifecycle``)."""

from __future__ import annotations

from pathlib import Path


class StreamscoreError(Exception):
    """Root of every error raised on purpose by streamscore."""


class SpecError(StreamscoreError):
    """The pipeline spec is invalid; the message names the offending field.

    ``refs_without_default`` lists feature refs with no entry in ``features.defaults`` (most
    often a misspelled ref) and ``feature_repo`` the spec's Feast repo, so that the CLI can
    say which of them the repo does not define."""

    refs_without_default: tuple[str, ...] = ()
    feature_repo: Path | None = None


class WorkerRoleError(StreamscoreError):
    """The worker's role does not fit the spec (e.g. a learning worker without labels)."""


class BadInput(StreamscoreError):
    """One input message cannot be scored. Carries the stage and a short reason code.

    Never raised across a batch: the pipeline turns it into a dead-letter record for that
    one message and carries on with the rest.
    """

    def __init__(self, stage: str, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{stage}: {reason}: {detail}")
        self.stage = stage
        self.reason = reason
        self.detail = detail
        #: The event field at fault, when one is (data quality counts unknown categories
        #: per field); never part of the message.
        self.field = field


class BatchTimeout(StreamscoreError):
    """A batch ran past ``batch_timeout_seconds`` (a read or a delivery that never answered).

    Like any failed batch it stops the worker; nothing of the batch was acked.
    """


class PrivacyError(StreamscoreError):
    """The spec's privacy section cannot be applied (e.g. it hashes fields, and no hash key
    is set): the worker refuses to start rather than publish what the spec withholds."""


class ReplayError(StreamscoreError):
    """A dead-letter replay cannot run (no such topic, a bad option); nothing was sent."""


class Unreachable(StreamscoreError):
    """A server a command needs did not answer within the connect timeout. Names the server,
    its address and the setting that points at it, so the message says what to change."""

    def __init__(self, what: str, address: str, setting: str, detail: str) -> None:
        super().__init__(
            f"cannot reach the {what} at {address} ({detail}): is it running? Check"
            f" {setting} (and STREAMSCORE_KAFKA_CONNECT_TIMEOUT_SECONDS for a slow network)"
        )
        self.what = what
        self.address = address
        self.setting = setting
        self.detail = detail


class CannotListen(StreamscoreError):
    """A port the process must listen on is taken (e.g. a second worker on one host) or its
    address is not this host's; the message names the setting."""
