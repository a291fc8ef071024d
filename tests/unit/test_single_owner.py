"""The labels consumer's assignor: every partition to one member, and the same one while it
stays (so one logical learner, and no needless hand-over)."""

from __future__ import annotations

from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from streams.learning.single_owner import SingleOwnerAssignor


class Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self._partitions.get(topic)
        return None if n is None else set(range(n))


CLUSTER = Cluster({"labels": 3})


def owned(assignment: dict[str, ConsumerProtocolMemberAssignment]) -> dict[str, list]:
    return {member: sorted(a.partitions()) for member, a in assignment.items()}


def rebalance(members: dict[str, SingleOwnerAssignor]) -> dict[str, list]:
    """One group rebalance as aiokafka runs it: every member's metadata, the leader's
    ``assign``, then each member's ``on_assignment``."""
    metadata = {member: a.metadata(["labels"]) for member, a in members.items()}
    assignment = SingleOwnerAssignor.assign(CLUSTER, metadata)  # type: ignore[arg-type]
    for member, assignor in members.items():
        assignor.on_assignment(assignment[member])
    return owned(assignment)


def test_every_partition_goes_to_one_member_the_first_in_sorted_order() -> None:
    members = {m: SingleOwnerAssignor() for m in ("worker-c", "worker-a", "worker-b")}
    got = rebalance(members)
    partitions = [("labels", 0), ("labels", 1), ("labels", 2)]
    assert [tuple(tp) for tp in got["worker-a"]] == partitions
    assert got["worker-b"] == [] and got["worker-c"] == []
    assert [m for m, a in members.items() if a.owns] == ["worker-a"]


def test_the_owner_keeps_the_partitions_when_others_join_and_hands_over_when_it_leaves() -> None:
    members = {"worker-m": SingleOwnerAssignor()}
    rebalance(members)
    # Members that sort before the owner join: the owner says it owns, and keeps them all.
    members |= {"worker-a": SingleOwnerAssignor(), "worker-b": SingleOwnerAssignor()}
    assert [m for m, p in rebalance(members).items() if p] == ["worker-m"]
    assert [m for m, p in rebalance(members).items() if p] == ["worker-m"]  # and again
    # The owner leaves (or dies): the first remaining member takes everything.
    del members["worker-m"]
    got = rebalance(members)
    assert len(got["worker-a"]) == 3 and got["worker-b"] == []
    assert members["worker-a"].owns and not members["worker-b"].owns


def test_two_members_claiming_ownership_still_give_one_owner() -> None:
    """After a split (a former owner that has not heard it lost): one owner again."""
    claim = ConsumerProtocolMemberMetadata(0, ["labels"], b"owner")
    got = owned(SingleOwnerAssignor.assign(CLUSTER, {"y": claim, "x": claim, "a": claim}))  # type: ignore[arg-type]
    assert [m for m, p in got.items() if p] == ["a"]
    assert len(got["a"]) == 3


def test_an_unknown_topic_assigns_nothing() -> None:
    metadata = {"a": ConsumerProtocolMemberMetadata(0, ["missing"], b"")}
    assert owned(SingleOwnerAssignor.assign(CLUSTER, metadata)) == {"a": []}  # type: ignore[arg-type]
