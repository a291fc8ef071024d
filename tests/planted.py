"""What an attacker who can write Redis would plant in a snapshot or evaluation key: a
pickle that runs code when unpickled. Here the code only creates a marker file (a real
attack would run a command), so a test can tell whether a reader ever unpickled it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


class PlantedPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def planted_pickle(marker: Path) -> bytes:
    """The payload's bytes; checks first that unpickling them does create a marker (on a
    sibling path), so a test relying on "no marker" cannot pass by accident."""
    control = marker.with_name(f"{marker.name}.control")
    pickle.loads(pickle.dumps(PlantedPayload(control))).close()  # noqa: S301
    assert control.exists(), "the planted payload does not work: the test would prove nothing"
    control.unlink()
    return pickle.dumps(PlantedPayload(marker))
