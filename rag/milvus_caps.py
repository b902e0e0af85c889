"""What the Milvus behind a URI can do, asked of the server (its version), never assumed.

| server                | several vector fields | BM25 function + sparse | hybrid_search | filter templates |
|-----------------------|-----------------------|------------------------|---------------|------------------|
| Milvus Lite 3.2       | yes                   | yes                    | yes           | no (rejects `{`) |
| Milvus 2.3            | no                    | no                     | no            | no               |
| Milvus 2.4            | yes                   | no                     | yes           | no               |
| Milvus 2.5, 2.6       | yes                   | yes                    | yes           | yes              |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    version: str
    lite: bool
    multi_vector: bool
    bm25_function: bool
    hybrid_search: bool
    filter_templates: bool

    @property
    def label(self) -> str:
        return self.version if self.lite else f"Milvus {self.version}"


def parse_version(text: str) -> tuple[int, int]:
    match = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def capabilities_of(version: str) -> Capabilities:
    version = str(version or "")
    if version.startswith("milvus_lite"):
        return Capabilities(version, True, True, True, True, False)
    major_minor = parse_version(version)
    return Capabilities(
        version, False,
        multi_vector=major_minor >= (2, 4),
        bm25_function=major_minor >= (2, 5),
        hybrid_search=major_minor >= (2, 4),
        filter_templates=major_minor >= (2, 5),
    )


def detect(client: Any) -> Capabilities:
    try:
        version = str(client.get_server_version())
    except Exception:  # a server too old to answer GetVersion has none of the newer features
        version = "unknown"
    return capabilities_of(version)
