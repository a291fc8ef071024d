"""Privacy: event values that must not leave the pipeline as they came in (spec ``privacy``).

A field in ``privacy.hash`` is replaced by its keyed HMAC-SHA256 (64 hex characters) in
every record that carries it, a field in ``privacy.drop`` is left out of them, and neither
is ever quoted in a dead letter's ``error``. Records carry two event values: the event id
(the prediction's Kafka key and ``event_id``, the prediction store's Redis keys, the joined
labels) and the entity key (``entity_key`` of predictions and shadow predictions). The
feature read still uses the real entity key: only what leaves the pipeline changes.

A hashed event id stays a join key: a label names the event by its real id, and the label
join hashes it with the same key before it looks the prediction up. The same value hashes
the same under the same key, in any field and any pipeline, so hashed ids and entity keys
stay stable across restarts and workers as long as the key is kept.

>>> from pydantic import SecretStr
>>> from streams.spec import PrivacySpec
>>> privacy = Privacy(PrivacySpec(hash=("id",), drop=("user",)), "id", "user",
...                   SecretStr("a key of 16+ chars"))
>>> privacy.event_id("e1") == privacy.event_id("e1") != "e1"
True
>>> privacy.entity_key("alice") is None  # dropped: the records leave it out
True
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from streams.errors import PrivacyError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from streams.spec import PipelineSpec, PrivacySpec

#: The setting that holds the key, as a user sets it.
HASH_KEY_VARIABLE = "STREAMSCORE_PRIVACY_HASH_KEY"


class Privacy:
    """What a pipeline's records may carry of an event's values."""

    def __init__(
        self,
        spec: PrivacySpec | None,
        id_field: str,
        entity_field: str,
        key: SecretStr | None,
    ) -> None:
        hashed = spec.hash if spec is not None else ()
        dropped = spec.drop if spec is not None else ()
        if hashed and key is None:
            msg = (
                f"the spec hashes privacy.hash {list(hashed)}, and {HASH_KEY_VARIABLE} is not"
                " set: set it (at least 16 characters, kept secret and stable; e.g. `openssl"
                " rand -hex 32`), so that nothing is published unhashed"
            )
            raise PrivacyError(msg)
        self._key = key.get_secret_value().encode() if key is not None and hashed else b""
        #: Fields whose values no dead letter's ``error`` may quote.
        self.withheld = frozenset(hashed) | frozenset(dropped)
        self.keep_dead_letter_originals = spec is None or spec.dead_letter_originals == "keep"
        self.hashes_id = id_field in hashed
        self._entity = (
            "hash" if entity_field in hashed else "drop" if entity_field in dropped else ""
        )

    @classmethod
    def for_pipeline(cls, spec: PipelineSpec, key: SecretStr | None) -> Privacy:
        """The spec's privacy, or ``PrivacyError`` (naming the pipeline) when it cannot be
        applied."""
        try:
            return cls(spec.privacy, spec.event.id_field, spec.entity.field, key)
        except PrivacyError as exc:
            msg = f"pipeline {spec.name!r}: {exc}"
            raise PrivacyError(msg) from None

    def hash(self, text: str) -> str:
        """The keyed HMAC-SHA256 of ``text`` (UTF-8), as 64 hex characters."""
        data = text.encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, data, "sha256").hex()

    def event_id(self, event_id: str) -> str:
        """The event id as records carry it (and as labels join to it)."""
        return self.hash(event_id) if self.hashes_id else event_id

    @property
    def changes_entity_key(self) -> bool:
        return bool(self._entity)

    def entity_key(self, entity_key: str | int) -> str | int | None:
        """The entity key as records carry it; None when it is dropped (left out)."""
        if not self._entity:
            return entity_key
        return self.hash(str(entity_key)) if self._entity == "hash" else None


#: No privacy section: records carry the values as they came.
NO_PRIVACY = Privacy(None, "", "", None)
