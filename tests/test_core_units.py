"""Unit tests of the core pieces: BM25, weighted RRF over LlamaIndex, images, filters, config."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from PIL import Image

from rag.bm25 import BM25Index, tokenize
from rag.catalog import CatalogRecord
from rag.config import parse_weights
from rag.errors import MmragError
from rag.fusion import WeightedRRFRetriever
from rag.images import BadImageError, load_image
from rag.search import coerce_filters, field_types


def test_network_guard_blocks_outside_hosts() -> None:
    with pytest.raises(ConnectionRefusedError, match="must not reach the network"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_tokenize_folds_plurals_and_drops_glue() -> None:
    assert tokenize("The Giraffes, eating leaves in the trees!") == ["giraffe", "eating", "leave", "tree"]


def test_bm25_ranks_by_term_weight_and_honours_masks() -> None:
    index = BM25Index(["a", "b", "c"], ["a giraffe eats leaves", "two dogs on a beach", "a giraffe next to a dog"])
    assert [d for d, _ in index.top("giraffe", 5)] == ["a", "c"] or [d for d, _ in index.top("giraffe", 5)] == ["c", "a"]
    assert [d for d, _ in index.top("giraffe dog", 5)][0] == "c"  # matches both terms
    assert [d for d, _ in index.top("dog", 5, allowed={"b"})] == ["b"]
    assert index.top("dog", 5, exclude={"b", "c"}) == []
    assert index.top("zebra", 5) == [] and index.top("the", 5) == []
    # Lucene IDF stays positive even for a term in most documents.
    assert all(score > 0 for _, score in BM25Index(["x", "y"], ["cat", "cat dog"]).top("cat", 5))


class _Fixed(BaseRetriever):
    def __init__(self, ids: list[str], nodes: dict[str, TextNode]) -> None:
        super().__init__()
        self.ids, self.nodes, self.seen = ids, nodes, []

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.seen.append(query_bundle)
        return [NodeWithScore(node=self.nodes[i], score=1.0 - r / 10) for r, i in enumerate(self.ids)]


def _nodes(*ids: str) -> dict[str, TextNode]:
    return {i: CatalogRecord(i, f"/{i}.jpg", f"caption {i}").node() for i in ids}


def test_weighted_rrf_matches_hand_computation_and_records_ranks() -> None:
    nodes = _nodes("a", "b", "c", "d")
    strong, weak = _Fixed(["a", "b", "c"], nodes), _Fixed(["d", "c", "b"], nodes)
    fusion = WeightedRRFRetriever({"caption": strong, "bm25": weak}, {"caption": 1, "bm25": 1}, top_k=4)
    result = fusion.retrieve(QueryBundle("q"))
    # Equal weights (normalised to 1/2): a=.5/60, b=.5/61+.5/62, c=.5/62+.5/61, d=.5/60 → b,c tie above a,d.
    scores = {n.node.node_id: n.score for n in result}
    assert scores["b"] == pytest.approx(0.5 / 61 + 0.5 / 62)
    assert scores["a"] == pytest.approx(0.5 / 60)
    assert [n.node.node_id for n in result] == ["b", "c", "a", "d"]
    assert fusion.last_ranks == {"caption": {"a": 1, "b": 2, "c": 3}, "bm25": {"d": 1, "c": 2, "b": 3}}
    # Both retrievers received the bundle untouched: nobody cached an embedding on it.
    assert strong.seen[0] is weak.seen[0] and strong.seen[0].embedding is None


def test_weights_let_the_strong_retriever_lead() -> None:
    nodes = _nodes("a", "b", "c", "d")
    strong, weak = _Fixed(["a", "b", "c"], nodes), _Fixed(["d", "c", "b"], nodes)
    # With k=60 a hit in both lists outweighs rank differences: at 1:0.1 b still beats a; at 1:0.01 the strong order holds.
    mild = WeightedRRFRetriever({"caption": strong, "bm25": weak}, {"caption": 1, "bm25": 0.1}, top_k=4)
    assert [n.node.node_id for n in mild.retrieve(QueryBundle("q"))][0] == "b"
    fusion = WeightedRRFRetriever({"caption": strong, "bm25": weak}, {"caption": 1, "bm25": 0.01}, top_k=4)
    assert [n.node.node_id for n in fusion.retrieve(QueryBundle("q"))] == ["a", "b", "c", "d"]


def test_parse_weights() -> None:
    assert parse_weights("clip=0.5,bm25=0") == {"clip": 0.5, "caption": 1.0, "bm25": 0.0}
    with pytest.raises(ValueError):
        parse_weights("colour=1")


def test_filters_are_typed_from_the_catalog() -> None:
    catalog = field_types({"x": CatalogRecord("x", "/x", "c", {"source": "coco2017", "coco_image_id": 139, "categories_known": True})})
    assert coerce_filters({"source": "coco2017", "coco_image_id": "139", "categories_known": "true"}, catalog) == {
        "source": "coco2017", "coco_image_id": 139, "categories_known": True}
    with pytest.raises(MmragError, match="unknown filter field 'colour'"):
        coerce_filters({"colour": "red"}, catalog)
    with pytest.raises(MmragError, match="holds int"):
        coerce_filters({"coco_image_id": "abc"}, catalog)


def test_load_image_applies_exif_orientation_and_first_frame(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert load_image(tmp_path / "anim.gif").mode == "RGB"


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"not an image at all", "not a readable image"),
                                            (None, "corrupt image")])
def test_load_image_rejects_bad_files(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.jpg"
    if content is None:  # a truncated JPEG: a valid header, then nothing
        Image.new("RGB", (64, 64), "blue").save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason):
        load_image(path)
