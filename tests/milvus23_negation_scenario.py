"""Driver for tests/test_composite_queries.py: run INSIDE a private network namespace (run_in_netns).

Starts a real Milvus 2.3 standalone (no BM25 function, prefix-only LIKE: BM25 is scored in this process),
indexes the example catalog caption-side and prints, as its last stdout line, what plain and negated BM25
searches returned: [[id, caption], ...] per query.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest.pipeline import index_folder  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.dev.milvus_standalone import MilvusStandalone  # noqa: E402
from rag.search import SearchEngine  # noqa: E402


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="q11-m23-"))
    catalog = REPO / "examples" / "catalog"
    out: dict = {}
    with MilvusStandalone(work / "milvus", bin_cache=REPO / ".cache" / "milvus-2.3.5") as server:
        settings = Settings(data_dir=work / "data", uri=server.uri, clip_model=None, collection_prefix="neg")
        index_folder(catalog / "images", settings, metadata=catalog / "metadata.jsonl", show_progress=False)
        with SearchEngine.open(settings) as engine:
            out["server"] = engine.store.caps.label
            for key, text, literal in (("plain", "a street", True), ("negated", "a street with no people", False)):
                response = engine.search(text, mode="bm25", k=40, literal=literal)
                out[key] = [[r.id, r.caption] for r in response.results]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
