"""The hot path: entity keys of one micro-batch -> one feature matrix, one store read.

``OnlineFeatureReader`` is the only place the stream touches Feast online. It resolves the
spec's refs against the registry once, at construction, then per batch: deduplicates the
keys (a card often pays several times in a batch), reads them in one Feast call, fills the
declared defaults where the store had nothing and maps the rows back to the batch order.

When every ref comes from one feature view (the demo), it reads through the provider's
``online_read``: the same Redis pipeline ``get_online_features`` issues, without building
and re-parsing a ``GetOnlineFeaturesResponse`` (about 2x faster at 256 keys). Refs spread
over several views go through ``get_online_features``, which batches every view into one
pipeline. Both give the values of ``get_online_features(..., full_feature_names=True)``.

Each row also comes with its event timestamp, per feature view (``online_read`` returns it
with the row; ``get_online_features`` puts it in every value's ``event_timestamps``), so the
scoring path can tell how old the features were at event time (``features.freshness``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from feast import FeatureService, FeatureStore, FeatureView, ValueType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values

from features.errors import FeatureStoreError
from streams.spec import PipelineSpec, feature_column

STAGE = "features.reader"
#: Entity keys whose Feast key messages are kept between batches (a few MiB at most).
ENTITY_KEY_CACHE_SIZE = 65_536

# Feature types a model input can take; everything is read as float64.
_NUMERIC = {
    ValueType.INT32,
    ValueType.INT64,
    ValueType.FLOAT,
    ValueType.DOUBLE,
    ValueType.BOOL,
}


@dataclass(eq=False)
class FeatureBatch:
    """Features of one batch, rows in the order of the keys given to ``read``.

    ``values`` columns follow ``spec.features.refs``; a value the store did not have holds
    the ref's declared default and is flagged in ``defaulted``. ``entity_found`` is False
    for rows where the store had no feature at all: an unknown entity, or one whose row left
    Redis. ``timestamps`` columns follow ``spec.features.views``: the event timestamp of the
    view's row (epoch seconds), NaN where the store had no row of that view. (Feast does not
    apply a view's ttl on online reads, so old rows are served: see ``features.freshness``.)
    """

    values: npt.NDArray[np.float64]
    defaulted: npt.NDArray[np.bool_]
    entity_found: npt.NDArray[np.bool_]
    timestamps: npt.NDArray[np.float64]


class OnlineFeatureReader:
    """Reads ``spec.features.refs`` for batches of entity keys, one Feast call per batch.

    The registry is read once here (views, entity type, service), so a re-applied repo needs
    a new reader. Raises FeatureStoreError when the spec and the registry disagree.
    """

    def __init__(self, store: FeatureStore, spec: PipelineSpec) -> None:
        self._store = store
        self.refs: tuple[str, ...] = spec.features.refs
        self._join_key = spec.entity.join_key
        self._defaults = np.array([spec.features.defaults[r] for r in self.refs], np.float64)
        self._service = _checked_service(store, spec) if spec.features.service else None
        views = _views_of(store, self.refs)
        self._key_type = _join_key_type(views, self._join_key)
        # The single-view fast path reads the view directly; its feature names in ref order.
        self._view: FeatureView | None = None
        self._names: list[str] = []
        if len(views) == 1:
            self._view = next(iter(views.values()))
            self._names = [ref.partition(":")[2] for ref in self.refs]
        self._columns = [feature_column(ref) for ref in self.refs]
        self.views: tuple[str, ...] = spec.features.views
        # Per view, its refs' columns (a row of the view is missing when all of them are) and
        # the response column whose event timestamps stand for the view's row.
        self._view_refs = [
            [j for j, ref in enumerate(self.refs) if ref.partition(":")[0] == view]
            for view in self.views
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protos: dict[Any, EntityKeyProto] = {}  # normalised key -> Feast's key message

    def read(self, keys: Sequence[Any]) -> FeatureBatch:
        """Features for ``keys`` (repeats allowed); blocks on one store round trip."""
        unique, inverse = self._dedupe(keys)
        if not unique:
            return self._assemble([], self._no_stamps(), inverse)
        try:
            if self._view is not None:
                rows = self._store.provider.online_read(
                    self._store.config, self._view, self._entity_protos(unique), list(self._names)
                )
                columns, stamps = self._from_rows(rows)
            else:
                response = self._store.get_online_features(
                    self._features_arg(), {self._join_key: unique}, full_feature_names=True
                )
                columns, stamps = self._from_response(response.proto)
        except Exception as exc:
            raise self._failure(len(unique), exc) from exc
        return self._assemble(columns, stamps, inverse)

    async def read_async(self, keys: Sequence[Any]) -> FeatureBatch:
        """``read`` on the event loop, through Feast's redis.asyncio client.

        Feast caches that client on first use, bound to the running loop, and a later loop
        fails with "Event loop is closed": use one store and reader per event loop.
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            msg = (
                f"{STAGE}: read_async called from a second event loop; Feast's async Redis"
                " client is bound to the first one. Open a new store and reader per loop."
            )
            raise FeatureStoreError(msg)
        unique, inverse = self._dedupe(keys)
        if not unique:
            return self._assemble([], self._no_stamps(), inverse)
        try:
            if self._view is not None:
                rows = await self._store.provider.online_read_async(
                    self._store.config, self._view, self._entity_protos(unique), list(self._names)
                )
                columns, stamps = self._from_rows(rows)
            else:
                response = await self._store.get_online_features_async(
                    self._features_arg(), {self._join_key: unique}, full_feature_names=True
                )
                columns, stamps = self._from_response(response.proto)
        except Exception as exc:
            raise self._failure(len(unique), exc) from exc
        return self._assemble(columns, stamps, inverse)

    def _dedupe(self, keys: Sequence[Any]) -> tuple[list[Any], npt.NDArray[np.intp]]:
        normalise = str if self._key_type == ValueType.STRING else int
        position: dict[Any, int] = {}
        try:
            inverse = np.fromiter(
                (position.setdefault(normalise(k), len(position)) for k in keys),
                dtype=np.intp,
                count=len(keys),
            )
        except (TypeError, ValueError) as exc:
            msg = f"{STAGE}: an entity key is not a valid {self._key_type.name} key: {exc}"
            raise FeatureStoreError(msg) from exc
        return list(position), inverse

    def _entity_protos(self, unique: list[Any]) -> list[EntityKeyProto]:
        # Entities recur (a card pays again and again) and building the two protobuf messages
        # per key was ~3% of a loaded scoring worker's Python time (py-spy --gil): they are
        # kept, read-only (Feast only serialises them), until the cache fills, then rebuilt.
        cache = self._protos
        missing = [k for k in unique if k not in cache]
        if missing:
            if len(cache) + len(missing) > ENTITY_KEY_CACHE_SIZE:
                cache.clear()  # and this batch's kept keys with it: build them all again
                missing = unique
            join_keys = [self._join_key]
            if self._key_type == ValueType.STRING:
                values = [ValueProto(string_val=k) for k in missing]
            elif self._key_type == ValueType.INT64:
                values = [ValueProto(int64_val=k) for k in missing]
            else:
                values = python_values_to_proto_values(missing, self._key_type)
            for key, value in zip(missing, values, strict=True):
                cache[key] = EntityKeyProto(join_keys=join_keys, entity_values=[value])
        return [cache[k] for k in unique]

    def _features_arg(self) -> list[str] | FeatureService:
        return self._service if self._service is not None else list(self.refs)

    def _no_stamps(self) -> npt.NDArray[np.float64]:
        return np.empty((0, len(self.views)), dtype=np.float64)

    def _from_rows(
        self, rows: list[Any]
    ) -> tuple[list[list[ValueProto | None]], npt.NDArray[np.float64]]:
        # online_read gives (event timestamp, {feature: Value}) per key. Redis answers a
        # missing row with empty values and the epoch as its time (or None, None): _assemble
        # masks the times of rows whose values are all missing.
        columns = [[None if data is None else data.get(n) for _, data in rows] for n in self._names]
        stamps = np.fromiter(
            (math.nan if ts is None else ts.timestamp() for ts, _ in rows),
            dtype=np.float64,
            count=len(rows),
        )
        return columns, stamps[:, None]

    def _from_response(
        self, proto: Any
    ) -> tuple[list[list[ValueProto | None]], npt.NDArray[np.float64]]:
        index = {name: i for i, name in enumerate(proto.metadata.feature_names.val)}
        columns = [list(proto.results[index[column]].values) for column in self._columns]
        # Every value carries its row's event timestamp; a view's first ref stands for it.
        stamps = np.empty((len(columns[0]), len(self.views)), dtype=np.float64)
        for v, refs in enumerate(self._view_refs):
            times = proto.results[index[self._columns[refs[0]]]].event_timestamps
            stamps[:, v] = np.fromiter(
                (t.seconds + t.nanos * 1e-9 for t in times), dtype=np.float64, count=len(times)
            )
        return columns, stamps

    def _assemble(
        self,
        columns: list[list[ValueProto | None]],
        stamps: npt.NDArray[np.float64],
        inverse: npt.NDArray[np.intp],
    ) -> FeatureBatch:
        n_unique = len(columns[0]) if columns else 0
        values = np.empty((n_unique, len(self.refs)), dtype=np.float64)
        missing = np.zeros((n_unique, len(self.refs)), dtype=np.bool_)
        for j, column in enumerate(columns):
            target = values[:, j]
            for i, value in enumerate(column):
                kind = None if value is None else value.WhichOneof("val")
                if kind is None or kind == "null_val":
                    missing[i, j] = True
                else:
                    target[i] = getattr(value, kind)
        values = np.where(missing, self._defaults, values)
        found: npt.NDArray[np.bool_] = ~np.all(missing, axis=1)
        for v, refs in enumerate(self._view_refs):
            stamps[missing[:, refs].all(axis=1), v] = np.nan
        return FeatureBatch(
            values=values[inverse],
            defaulted=missing[inverse],
            entity_found=found[inverse],
            timestamps=stamps[inverse],
        )

    def _failure(self, n_keys: int, exc: Exception) -> FeatureStoreError:
        where = self._view.name if self._view is not None else ", ".join(self.refs)
        msg = f"{STAGE}: online read of {n_keys} keys from {where!r} failed: {exc!r}"
        return FeatureStoreError(msg)


def _views_of(store: FeatureStore, refs: Sequence[str]) -> dict[str, FeatureView]:
    """The feature views behind ``refs``, checking every feature exists and is numeric."""
    views: dict[str, FeatureView] = {}
    for ref in refs:
        view_name, _, feature = ref.partition(":")
        if view_name not in views:
            try:
                views[view_name] = store.get_feature_view(view_name)
            except Exception as exc:
                msg = f"{STAGE}: feature ref {ref!r}: no feature view {view_name!r} in the registry"
                raise FeatureStoreError(msg) from exc
        fields = {field.name: field for field in views[view_name].features}
        if feature not in fields:
            msg = f"{STAGE}: feature ref {ref!r}: view {view_name!r} has no feature {feature!r}"
            raise FeatureStoreError(msg)
        value_type = fields[feature].dtype.to_value_type()
        if value_type not in _NUMERIC:
            msg = f"{STAGE}: feature ref {ref!r} has type {value_type.name}; models need numbers"
            raise FeatureStoreError(msg)
    return views


def _join_key_type(views: dict[str, FeatureView], join_key: str) -> ValueType:
    """The value type of ``join_key``, which must be every view's only join key."""
    types = set()
    for name, view in views.items():
        keys = [column.name for column in view.entity_columns]
        if keys != [join_key]:
            msg = f"{STAGE}: view {name!r} is keyed by {keys}, the spec's entity by [{join_key!r}]"
            raise FeatureStoreError(msg)
        types.add(view.entity_columns[0].dtype.to_value_type())
    if len(types) != 1:
        msg = f"{STAGE}: join key {join_key!r} has different types across views: {types}"
        raise FeatureStoreError(msg)
    return types.pop()


def _checked_service(store: FeatureStore, spec: PipelineSpec) -> FeatureService:
    """The spec's FeatureService, which must serve exactly ``spec.features.refs``."""
    name = spec.features.service
    try:
        service = store.get_feature_service(str(name))
    except Exception as exc:
        msg = f"{STAGE}: feature service {name!r} is not in the registry: {exc}"
        raise FeatureStoreError(msg) from exc
    served = {
        f"{projection.name_to_use()}:{feature.name}"  # type: ignore[no-untyped-call]
        for projection in service.feature_view_projections
        for feature in projection.features
    }
    wanted = set(spec.features.refs)
    if served != wanted:
        msg = (
            f"{STAGE}: feature service {name!r} does not serve exactly features.refs:"
            f" served but not in refs {sorted(served - wanted)},"
            f" in refs but not served {sorted(wanted - served)}"
        )
        raise FeatureStoreError(msg)
    return service
