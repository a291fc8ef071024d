"""Obtain Apache Kafka's broker jars from Maven Central, once, into a cache outside git.

``kafka_classpath`` returns the folder of jars for the pinned version, running Maven over
``pom.xml`` (beside this file) the first time only. The folder is filled under a temporary
name and renamed when complete, so an interrupted download is never mistaken for a cache.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streams.runtime.embedded import EmbeddedServerError

#: The broker version the project is proven on; docker-compose.yml's image has the same tag.
KAFKA_VERSION = "4.1.1"
MIN_JAVA = 17
POM = Path(__file__).with_name("pom.xml")
#: Maven's first download of the broker and its ~45 jars took ~45 s here.
MAVEN_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class JavaCheck:
    """Whether this machine can run (and, with ``mvn``, fetch) the Apache Kafka broker."""

    java: str | None
    java_major: int | None
    mvn: str | None
    cached: bool

    @property
    def usable(self) -> bool:
        java_ok = self.java is not None and (self.java_major or 0) >= MIN_JAVA
        return java_ok and (self.cached or self.mvn is not None)

    @property
    def why_not(self) -> str:
        if self.java is None:
            return "no `java` on PATH"
        if (self.java_major or 0) < MIN_JAVA:
            return f"java {self.java_major} is older than the {MIN_JAVA} Kafka 4 needs"
        if not self.cached and self.mvn is None:
            return "no `mvn` on PATH to fetch the broker, and no cached copy"
        return ""


def libs_dir(cache_dir: Path, version: str = KAFKA_VERSION) -> Path:
    return cache_dir / f"kafka-{version}" / "libs"


def check_java(cache_dir: Path, version: str = KAFKA_VERSION) -> JavaCheck:
    java = shutil.which("java")
    return JavaCheck(
        java=java,
        java_major=_java_major(java) if java else None,
        mvn=shutil.which("mvn"),
        cached=libs_dir(cache_dir, version).is_dir(),
    )


def _java_major(java: str) -> int | None:
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_major(done.stderr)


def parse_java_major(version_text: str) -> int | None:
    """The major version in ``java -version``'s output ('openjdk version "17.0.15" ...').

    >>> parse_java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> parse_java_major('java version "1.8.0_402"'), parse_java_major("no java here")
    (8, None)
    """
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8" is Java 8


def kafka_classpath(cache_dir: Path, version: str = KAFKA_VERSION) -> Path:
    """The folder holding the broker's jars, fetched with Maven if it is not cached yet."""
    target = libs_dir(cache_dir, version)
    if target.is_dir():
        return target
    check = check_java(cache_dir, version)
    if not check.usable:
        msg = f"cannot fetch Apache Kafka {version}: {check.why_not}"
        raise EmbeddedServerError(msg)
    assert check.mvn is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="libs-partial-", dir=target.parent))
    command = [
        check.mvn,
        "--batch-mode",
        "--quiet",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={partial}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_SECONDS, check=False
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-2000:]
            msg = f"mvn could not fetch Apache Kafka {version} (exit {done.returncode}): {tail}"
            raise EmbeddedServerError(msg)
        try:
            partial.rename(target)  # atomic: a cache folder is always complete
        except OSError:
            if not target.is_dir():  # else another process finished the same fetch first
                raise
    except subprocess.TimeoutExpired as exc:
        msg = f"mvn did not fetch Apache Kafka {version} within {MAVEN_TIMEOUT_SECONDS}s"
        raise EmbeddedServerError(msg) from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
