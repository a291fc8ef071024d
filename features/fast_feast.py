"""Feast for a serving worker, without typeguard's instrumentation.

Feast decorates its definition classes (``FeatureView``, ``Entity``, ``FeatureService``, ...)
with typeguard's ``@typechecked``. Typeguard 4 instruments a decorated class when it is
defined: it re-reads the class's source, rewrites it with a type check on every argument and
assignment, and compiles it again (agronholm/typeguard#468). Measured with ``python -X
importtime``: about 2.5 s of a worker's start on these machines (``import feast`` 4.5 s with,
1.5 s without), and a check on each call Feast makes with those classes on the read path.
featurebyte patches it out of Feast's online retrieval for the same reason
(featurebyte/featurebyte#2363).

A worker builds no definitions from user code: it reads the registry that ``streamscore
features apply`` wrote, and that command (like ``validate`` and ``train``) keeps Feast's checks
on the user's definitions. So only the ``worker`` command calls ``skip_feast_type_checks``,
before anything imports Feast.
"""

from __future__ import annotations

import sys
from typing import Any


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """``typechecked`` as the identity, used bare or with options."""
    return target if target is not None else _unchecked


def skip_feast_type_checks() -> bool:
    """Make typeguard's ``typechecked`` the identity for what imports it from now on; False
    (and nothing changed) when Feast is already imported: too late to matter."""
    if "feast" in sys.modules:
        return False
    import typeguard

    typeguard.typechecked = _unchecked
    return True
