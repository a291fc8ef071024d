"""What a Feast repo defines (views, their features, services), checked against a spec's
refs before anything connects: ``streamscore validate`` and the CLI's message for a
misspelled ref use it. The worker checks the same against the applied registry
(``features.reader``)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from features.store import parse_definitions


@dataclass(frozen=True)
class RepoFeatures:
    """The features of a repo's views ('view:feature') and the refs of each service."""

    repo: Path
    refs: tuple[str, ...]
    services: dict[str, frozenset[str]]

    @classmethod
    def read(cls, repo: Path) -> RepoFeatures:
        contents = parse_definitions(repo)
        refs = tuple(
            f"{view.name}:{field.name}"
            for view in contents.feature_views
            for field in view.features
        )
        services = {
            service.name: frozenset(
                f"{projection.name_to_use()}:{feature.name}"  # type: ignore[no-untyped-call]
                for projection in service.feature_view_projections
                for feature in projection.features
            )
            for service in contents.feature_services
        }
        return cls(Path(repo).resolve(), refs, services)

    def unknown(self, refs: tuple[str, ...] | list[str]) -> list[str]:
        """One message per ref the repo does not define, with the closest one it does."""
        problems = []
        for ref in refs:
            if ref in self.refs:
                continue
            close = difflib.get_close_matches(ref, self.refs, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"it has {', '.join(self.refs)}"
            problems.append(f"feature ref {ref!r} is not in the Feast repo {self.repo} ({hint})")
        return problems

    def service_mismatch(self, name: str, refs: tuple[str, ...]) -> str | None:
        """Why FeatureService ``name`` does not serve exactly ``refs``, or None if it does."""
        served = self.services.get(name)
        if served is None:
            known = ", ".join(sorted(self.services)) or "none"
            return f"feature service {name!r} is not in the Feast repo {self.repo} (it has {known})"
        wanted = set(refs)
        if served == wanted:
            return None
        return (
            f"feature service {name!r} does not serve exactly features.refs: served but not in"
            f" refs {sorted(served - wanted)}, in refs but not served {sorted(wanted - served)}"
        )
