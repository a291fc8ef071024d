"""A Kafka partition assignor that gives every partition to ONE member of the group.

The labels consumer (``streams.learning.label_consumer``) runs in every learning worker, but a
pipeline has one logical online model: exactly one worker may learn at a time, in one
order, with one checkpoint. Rather than funnel labels through a one-partition topic (a
second hop per label, which once cost as much CPU as the learning itself), the labels
topic keeps its partitions and this assignor hands all of them to a single member; the
others stay in the group, idle, ready to take over when it leaves or dies. Kafka's group
generations fence a former owner: its offset commits are refused once it is out.

The owner is sticky: a member that owned the partitions says so in its subscription
metadata, and keeps them when another worker joins (moving them would only make the new
owner reload the checkpoint). Without an owner among the members (the first join, the
owner gone) the first member id in sorted order gets them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

#: A member's subscription metadata says this when it owns the partitions now.
OWNER = b"owner"


class SingleOwnerAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """One per consumer: it remembers whether its consumer owns the partitions.

    aiokafka calls ``metadata`` and ``on_assignment`` on the object it was given, so the
    instance's state travels with the consumer (the base class declares classmethods).
    """

    name = "streamscore-single-owner"
    version = 0

    def __init__(self) -> None:
        self.owns = False

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owners = sorted(m for m, meta in members.items() if meta.user_data == OWNER)
        owner = (owners or sorted(members))[0] if members else None
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        everything = [(t, sorted(cluster.partitions_for_topic(t) or ())) for t in topics]
        return {
            member: ConsumerProtocolMemberAssignment(
                cls.version, everything if member == owner else [], b""
            )
            for member in members
        }

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            self.version, list(topics), OWNER if self.owns else b""
        )

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.owns = bool(assignment.partitions())
