"""What ``models.river_state`` must know of River's own object graph (River 0.26): which
attributes are not state, where River itself puts None, and what River builds where while
it learns. Snapshots are only restored by the River version that wrote them, so this
knowledge is checked by the round-trip tests of every online model kind
(tests/unit/test_online.py) whenever River changes.

River is imported on first use: it is slow to import, and the pipeline spec must not be.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

Builder = tuple[type, Callable[[], object]]


class _River:
    """The River types the rules below test against."""

    def __init__(self) -> None:
        from river import compose, proba, tree
        from river.tree.hoeffding_tree import HoeffdingTree
        from river.tree.nodes.branch import (
            DTBranch,
            NominalBinaryBranch,
            NominalMultiwayBranch,
            NumericBinaryBranch,
        )
        from river.tree.nodes.leaf import HTLeaf
        from river.tree.splitter import GaussianSplitter
        from river.utils import VectorDict

        self.VectorDict = VectorDict
        self.Pipeline = compose.Pipeline
        self.Distribution = proba.base.Distribution
        self.Gaussian = proba.Gaussian
        self.GaussianSplitter = GaussianSplitter
        self.NominalSplitter = tree.splitter.nominal_splitter_classif.NominalSplitterClassif
        self.HoeffdingTree = HoeffdingTree
        self.HTLeaf = HTLeaf
        self.DTBranch = DTBranch
        # The branches a Hoeffding tree classifier grows: on numeric inputs, and on
        # nominal_attributes (multiway unless binary_split); placeholders to be filled.
        numeric: Any = NumericBinaryBranch  # Any: River's constructors are untyped
        nominal: Any = NominalBinaryBranch
        multiway: Any = NominalMultiwayBranch
        self.branches: tuple[Builder, ...] = (
            (NumericBinaryBranch, lambda: numeric({}, "", 0.0, 0, None, None)),
            (NominalBinaryBranch, lambda: nominal({}, "", 0.0, 0, None, None)),
            (NominalMultiwayBranch, lambda: multiway({}, "", [], 0)),
        )


@functools.cache
def _river() -> _River:
    return _River()


def vector_dict() -> type:
    """River's VectorDict (linear models' weights): a mapping implemented in Rust."""
    return _river().VectorDict


def not_state(obj: object) -> set[str]:
    """Attributes of ``obj`` that are not state: River rebuilds them, or they are the fresh
    object's own. A Pipeline derives its execution plan from its steps (rebuilt on first
    use); a tree leaf's ``splitter`` is the tree's template, shared by every leaf (the fresh
    tree's ``_new_leaf`` sets it); a distribution's ``_rng`` only serves ``sample()``, which
    no learner calls, and River leaves it unseeded."""
    river = _river()
    if isinstance(obj, river.Pipeline):
        return {"_plan", "_inference_transformers", "_last_step_cached", "_last_step_params"}
    if isinstance(obj, river.HTLeaf):
        return {"splitter"}
    if isinstance(obj, river.Distribution):
        return {"_rng"}
    return set()


def nullable(owner: object, attribute: str) -> bool:
    """Whether River itself sets None over the fresh value there: a deactivated leaf drops
    its splitters."""
    return isinstance(owner, _river().HTLeaf) and attribute == "splitters"


def built_at(owner: object, attribute: str, owners: tuple[object, ...]) -> Iterator[Builder]:
    """The objects River builds in ``owner.attribute`` (a container, or an attribute that
    starts as None) while learning, as (class, build): a leaf's per-feature splitters (as
    ``update_splitters`` does), a Gaussian splitter's per-class distributions, and a tree's
    nodes (the leaf kind of its ``leaf_prediction``, or a branch). ``owners`` are the
    objects above ``owner``, where a node finds its tree."""
    river = _river()
    target: Any = owner
    if isinstance(target, river.HTLeaf) and attribute == "splitters":
        yield type(target.splitter), target.splitter.clone
        yield river.NominalSplitter, target.new_nominal_splitter
    elif isinstance(target, river.GaussianSplitter) and attribute == "_att_dist_per_class":
        yield river.Gaussian, river.Gaussian
    elif (isinstance(target, river.HoeffdingTree) and attribute == "_root") or (
        isinstance(target, river.DTBranch) and attribute == "children"
    ):
        trees = [o for o in owners if isinstance(o, river.HoeffdingTree)]
        if trees:
            leaf = trees[-1]._new_leaf()
            yield type(leaf), lambda: leaf
            yield from river.branches


__all__ = ["built_at", "not_state", "nullable", "vector_dict"]
