"""River state as data: values of every kind round-trip exactly; data that does not fit the
object our code built is refused with the place it was found, and never builds anything the
model would not have built itself."""

from __future__ import annotations

import collections
import functools
import math
from typing import Any

import orjson
import pytest
from river import datasets, metrics, preprocessing, tree
from river.tree.nodes.branch import NumericBinaryBranch

import models.river_state
from models.river_state import StateError, export_state, restore_state


class Holder:
    """A stand-in for a River object holding every container kind River uses."""

    def __init__(self) -> None:
        self.number = 0
        self.ratio = 0.0
        self.name = ""
        self.flag = False
        self.nothing = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.sums: collections.defaultdict[Any, Any] = collections.defaultdict(
            functools.partial(collections.defaultdict, float)
        )
        self.ordered: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.window: collections.deque[Any] = collections.deque(maxlen=3)
        self.seen: set[Any] = set()
        self.pairs: list[Any] = []
        self.child: Any = metrics.Accuracy()


def filled() -> Holder:
    holder = Holder()
    holder.number, holder.ratio, holder.name, holder.flag = 7, -0.0, "é", True
    holder.counts.update("abca")
    holder.sums[True]["x"] += 1.5
    holder.sums[False]  # an empty inner defaultdict
    holder.ordered.update(z=math.nan, a=math.inf, m=-math.inf)
    holder.window.extend([((True, 0.25), {}), ((False, 1e-300), {}), ((True, 1.0), {})])
    holder.seen.update({1.5, "s", False, (1, "t")})
    holder.pairs = [(1, 2.0), [None, "x"], {"k": [1]}]
    for y_true, y_pred in [(True, True), (False, True), (True, False)]:
        holder.child.update(y_true, y_pred)
    return holder


def test_every_value_kind_round_trips_through_json_exactly() -> None:
    original = filled()
    data = orjson.loads(orjson.dumps(export_state(original)))
    restored = restore_state(Holder(), data)
    assert restored.number == 7 and math.copysign(1, restored.ratio) == -1
    assert (restored.name, restored.flag, restored.nothing) == ("é", True, None)
    assert type(restored.counts) is collections.Counter and restored.counts == original.counts
    assert restored.sums == original.sums and type(restored.sums[True]) is collections.defaultdict
    assert type(restored.ordered) is collections.OrderedDict
    assert repr(restored.ordered) == repr(original.ordered)  # order, NaN and infinities
    assert restored.window == original.window and restored.window.maxlen == 3
    assert restored.seen == original.seen and restored.pairs == original.pairs
    assert type(restored.pairs[0]) is tuple and type(restored.pairs[1]) is list
    assert restored.child.get() == original.child.get()
    assert restored.child.cm.data == original.child.cm.data
    assert export_state(restored) == export_state(original)
    assert restored.sums["new"]["y"] == 0.0  # the fresh object's factories, kept


def fresh_data() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(orjson.dumps(export_state(filled())))
    return data


def attributes(data: dict[str, Any], index: int = 0) -> dict[str, Any]:
    attrs: dict[str, Any] = data["objects"][index][1]
    return attrs


def plant_a_dict_object(data: dict[str, Any]) -> None:
    """An "object" whose class is the container the fresh object holds at that place."""
    data["objects"].append(["collections.OrderedDict", {}])
    attributes(data)["ordered"] = ["object", len(data["objects"]) - 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: attributes(d).update(number="7"),
            r"state\.number: holds '7' where .* has a builtins\.int",
        ),
        (lambda d: attributes(d).update(flag=1), r"state\.flag: holds 1 where .* builtins\.bool"),
        (lambda d: attributes(d).update(child=None), r"state\.child: holds null where .*Accuracy"),
        (lambda d: attributes(d).update(counts=["list", []]), r"state\.counts: holds a list where"),
        (
            lambda d: attributes(d).update(pairs=["dict", []]),
            r"state\.pairs: holds a mapping where",
        ),
        (lambda d: attributes(d).update(number=["eval", "1"]), r"state\.number: is not state data"),
        (lambda d: attributes(d).update(number={"a": 1}), r"state\.number: is not state data"),
        (lambda d: attributes(d).update(extra=1), r"missing \[\], unexpected \['extra'\]"),
        (lambda d: attributes(d).pop("name"), r"missing \['name'\], unexpected \[\]"),
        (
            lambda d: d["objects"].__setitem__(1, ["builtins.eval", {}]),
            r"state\.child: holds an object builtins\.eval where",
        ),
        (lambda d: d["objects"].append(["x.Y", {}]), r"1 objects are not used"),
        (
            lambda d: attributes(d).update(number=["object", 1]),
            r"state\.number: holds an object river.*Accuracy where .*builtins.int",
        ),
        (
            lambda d: attributes(d).update(child=["object", 0]),
            r"state\.child: refers to object 0, .* already used",
        ),
        (
            lambda d: attributes(d).update(child=["object", 5]),
            r"state\.child: refers to object 5, missing",
        ),
        (
            lambda d: attributes(d)["window"][1].extend(attributes(d)["window"][1]),
            r"state\.window: holds 6 items, the model's window is 3",
        ),
        (
            lambda d: attributes(d).update(seen=["set", [["list", []]]]),
            r"state\.seen\[0\]: is not a usable key",
        ),
        (
            lambda d: attributes(d).update(counts=["dict", [["a", 1], ["a", 2]]]),
            r"state\.counts: a mapping has the key 'a' twice",
        ),
        (lambda d: attributes(d).update(counts=["dict", [["a"]]]), r"not a \[key, value\] pair"),
        (
            lambda d: attributes(d).update(counts=["dict", [["a", "x"]]]),
            r"counts\['a'\]: holds 'x'",
        ),
        (
            plant_a_dict_object,
            r"state\.ordered: holds an object collections\.OrderedDict where .*OrderedDict",
        ),
        (
            lambda d: attributes(d).update(nothing=["object", 1], child=None),
            r"state\.nothing: holds a river.*Accuracy, which the model .* never creates here",
        ),
    ],
)
def test_data_that_does_not_fit_is_refused_where_it_is(change: Any, message: str) -> None:
    data = fresh_data()
    change(data)
    with pytest.raises(StateError, match=message):
        restore_state(Holder(), data)


def test_not_state_data_at_all_is_refused() -> None:
    for data in (None, [], {"objects": []}, {"objects": [["x", {}]], "extra": 1}):
        with pytest.raises(StateError, match="state: is not state data"):
            restore_state(Holder(), data)


def test_what_is_not_data_is_never_exported() -> None:
    holder = Holder()
    holder.pairs = [print]
    with pytest.raises(StateError, match=r"state\.pairs\[0\]: holds a builtins\.builtin_function"):
        export_state(holder)
    holder = Holder()
    holder.child = metrics.RollingROCAUC()  # its window lives in River's Rust extension
    with pytest.raises(StateError, match=r"state\.child\._metric: holds a .*RsRollingROCAUC"):
        export_state(holder)
    holder = Holder()
    holder.pairs = [holder.counts]  # restoring would make two Counters of one
    with pytest.raises(
        StateError, match=r"state\.pairs\[0\]: is the value already exported at state\.counts"
    ):
        export_state(holder)


SPLITTING = {"grace_period": 20, "split_criterion": "hellinger"}  # splits in 600 rows


def trained_tree(**params: Any) -> tree.HoeffdingTreeClassifier:
    model = tree.HoeffdingTreeClassifier(**params)
    for x, y in list(datasets.Phishing())[:600]:
        model.learn_one(x, y)
    return model


def test_tree_nodes_are_only_the_kinds_river_builds_there() -> None:
    """A node, splitter or distribution is built by the calls River makes at that place;
    the recorded class only picks among them."""
    data = orjson.loads(orjson.dumps(export_state(trained_tree(**SPLITTING))))
    names = [name for name, _ in data["objects"]]
    assert "river.tree.nodes.branch.NumericBinaryBranch" in names
    for planted in ("subprocess.Popen", "river.proba.gaussian.Gaussian"):
        for kind in ("LeafNaiveBayesAdaptive", "GaussianSplitter"):
            changed = orjson.loads(orjson.dumps(data))
            index = max(i for i, (name, _) in enumerate(changed["objects"]) if kind in name)
            changed["objects"][index][0] = planted
            with pytest.raises(
                StateError, match=f"holds a {planted}, which the model .* never creates here"
            ):
                restore_state(tree.HoeffdingTreeClassifier(**SPLITTING), changed, "model")


def test_a_deactivated_leaf_and_disabled_attributes_round_trip() -> None:
    params = {**SPLITTING, "leaf_prediction": "mc"}  # naive Bayes leaves disable nothing
    model = trained_tree(**params)
    first, second, *_ = (leaf for leaf in model._find_leaves() if "https" in leaf.splitters)
    first.deactivate()  # as River does at max_depth or on a null-split pre-prune
    second.disable_attribute("https")  # as River does with remove_poor_attrs
    restored = restore_state(tree.HoeffdingTreeClassifier(**params), export_state(model))
    leaves = model._find_leaves()
    restored_leaves = restored._find_leaves()
    assert restored_leaves[leaves.index(first)].splitters is None
    assert restored_leaves[leaves.index(second)]._disabled_attrs == {"https"}
    assert export_state(restored) == export_state(model)


def test_a_deep_tree_stays_within_jsons_nesting_limit() -> None:
    """Objects are listed flat: a tree much deeper than JSON encoders' nesting limit
    (orjson: 255) exports and restores."""
    model = tree.HoeffdingTreeClassifier()
    x = {"a": 0.0}
    model.learn_one(x, True)
    node: Any = model._root
    for depth in range(300):
        node = NumericBinaryBranch({True: 1.0}, "a", float(depth), depth, node, model._new_leaf())
    model._root = node
    text = orjson.dumps(export_state(model))
    restored = restore_state(tree.HoeffdingTreeClassifier(), orjson.loads(text))
    assert restored.predict_proba_one(x) == model.predict_proba_one(x) == {True: 1.0}
    assert restored.height == model.height == 301


def test_data_nested_too_deeply_is_refused() -> None:
    nested: Any = 1.0
    for _ in range(5000):
        nested = ["list", [nested]]
    data = fresh_data()
    attributes(data)["pairs"] = nested
    with pytest.raises(StateError, match="state: nested too deeply to restore"):
        restore_state(Holder(), data)


def test_scaler_doctest_and_module_examples_run() -> None:
    import doctest

    assert doctest.testmod(models.river_state).failed == 0
    scaler = preprocessing.StandardScaler()
    assert restore_state(preprocessing.StandardScaler(), export_state(scaler)).counts == {}
