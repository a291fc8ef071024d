"""Canary routing: which events of a batch another version of the primary's model serves.

The spec's ``model.canary`` names the version (usually the registry alias ``canary``) and a
share of entity keys. A key's arm is a hash of the key alone, so the same card, user or
device meets the same model on every worker, in every batch and after a restart: its
records are comparable over time, and the labels of one arm are never mixed with the
other's. The primary still scores every row (one run per batch either way): shadows and
drift compare against the primary, and the canary runs once more on its rows only.

>>> canary_rows(["a", "b", "c"], 0.0).tolist()
[False, False, False]
>>> bool(canary_rows(["card-7"], 0.5)[0]) == bool(canary_rows(["card-7"], 0.5)[0])
True
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

PRIMARY = "primary"
CANARY = "canary"
_HASHES = 2**32  # crc32's range


def canary_rows(keys: Sequence[object], share: float) -> npt.NDArray[np.bool_]:
    """Whether each entity key is in the canary's share: crc32 of the key's text below
    ``share`` of its range. crc32 is in the standard library, stable across processes
    (unlike ``hash``) and about 0.1 µs a key."""
    cut = int(share * _HASHES)
    hashes = np.fromiter(
        (zlib.crc32(str(key).encode()) for key in keys), dtype=np.uint64, count=len(keys)
    )
    return hashes < cut


def arm_model_name(model: str) -> str:
    """The name the canary arm's scores go by in the label join and its evaluation
    (``fraud_gbt@canary``), so that each arm is evaluated on the events it served."""
    return f"{model}@{CANARY}"


def arm(model: str, version: int) -> str:
    """``<model>@<version>``: one model version, wherever it served (primary or shadow).
    ``model`` may be a role's name for a registry model (``fraud_gbt@challenger``, the
    challenger shadow's): its registry name is what goes before the version, so a version
    has one arm whichever role it served in (registry names have no '@').

    >>> arm("fraud_gbt@challenger", 3)
    'fraud_gbt@3'
    """
    return f"{model.split('@', 1)[0]}@{version}"
