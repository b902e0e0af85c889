"""Unit tests of the core pieces: BM25, weighted RRF over LlamaIndex, images, filters, config."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from PIL import Image

from rag.bm25 import BM25Index, tokenize
from rag.config import check_weights, parse_weights
from rag.errors import MmragError
from rag.fusion import WeightedRRFRetriever
from rag.images import BadImageError, load_image
from rag.milvus_filters import build_filter
from rag.retrievers import id_node


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


def test_bm25_scores_are_okapi_with_lucene_idf_by_hand() -> None:
    texts = ["cat cat dog", "dog bird", "cat"]
    index = BM25Index(["x", "y", "z"], texts)
    k1, b, avgdl = 1.5, 0.75, (3 + 2 + 1) / 3
    idf_cat = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    expected = [idf_cat * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)) for tf, dl in ((2, 3), (0, 2), (1, 1))]
    assert index.scores(["cat"]) == pytest.approx(expected)


class _Fixed(BaseRetriever):
    def __init__(self, ids: list[str]) -> None:
        super().__init__()
        self.ids, self.seen = ids, []

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.seen.append(query_bundle)
        return [id_node(i, 1.0 - r / 10) for r, i in enumerate(self.ids)]


def test_weighted_rrf_matches_hand_computation() -> None:
    strong, weak = _Fixed(["a", "b", "c"]), _Fixed(["d", "c", "b"])
    fusion = WeightedRRFRetriever({"caption": strong, "bm25": weak}, {"caption": 1, "bm25": 1}, top_k=4)
    assert fusion.uses_llamaindex_rrf  # equal weights: LlamaIndex's own QueryFusionRetriever fuses
    result = fusion.retrieve(QueryBundle("q"))
    # a=1/60, b=1/61+1/62, c=1/62+1/61, d=1/60 → b,c tie above a,d (ties by id).
    scores = {n.node.node_id: n.score for n in result}
    assert scores["b"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["a"] == pytest.approx(1 / 60)
    assert [n.node.node_id for n in result] == ["b", "c", "a", "d"]
    # Both retrievers received the bundle untouched: nobody cached an embedding on it.
    assert strong.seen[0] is weak.seen[0] and strong.seen[0].embedding is None


def test_own_rrf_equals_query_fusion_retriever_with_equal_weights() -> None:
    """The weighted path, run with equal weights, reproduces LlamaIndex's RRF exactly (the oracle)."""
    lists = [["a", "b", "c", "e"], ["d", "c", "b"], ["e", "a"]]
    retrievers = {f"r{i}": _Fixed(ids) for i, ids in enumerate(lists)}
    llama = WeightedRRFRetriever(retrievers, {}, top_k=5).retrieve(QueryBundle("q"))
    ours = WeightedRRFRetriever(retrievers, {}, top_k=5, rrf_k=60.0 + 1e-12)
    assert not ours.uses_llamaindex_rrf
    mine = ours.retrieve(QueryBundle("q"))
    assert [n.node.node_id for n in mine] == [n.node.node_id for n in llama]
    assert [n.score for n in mine] == pytest.approx([n.score for n in llama])


def test_weights_let_the_strong_retriever_lead() -> None:
    strong, weak = _Fixed(["a", "b", "c"]), _Fixed(["d", "c", "b"])
    # With k=60 a hit in both lists outweighs rank differences: at 1:0.1 b still beats a; at 1:0.01 the strong order holds.
    mild = WeightedRRFRetriever({"caption": strong, "bm25": weak}, {"caption": 1, "bm25": 0.1}, top_k=4)
    assert [n.node.node_id for n in mild.retrieve(QueryBundle("q"))][0] == "b"
    fusion = WeightedRRFRetriever({"caption": strong, "bm25": weak}, {"caption": 1, "bm25": 0.01}, top_k=4)
    assert [n.node.node_id for n in fusion.retrieve(QueryBundle("q"))] == ["a", "b", "c", "d"]


def test_parse_weights_accepts_finite_non_negative_numbers() -> None:
    assert parse_weights("clip=0.5, bm25=0") == {"clip": 0.5, "bm25": 0.0}
    assert parse_weights("ocr=2", names=("clip", "ocr")) == {"ocr": 2.0}


@pytest.mark.parametrize("text,message", [
    ("caption=nan", "finite"), ("bm25=inf", "finite"), ("clip=-1", ">= 0"), ("clip=abc", "not a number"),
    ("clip", "expected NAME=NUMBER"), ("colour=1", "unknown channel"),
])
def test_bad_weights_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(MmragError, match=message):
        parse_weights(text, names=("clip", "caption", "bm25", "ocr"))


def test_all_zero_weights_are_refused() -> None:
    with pytest.raises(MmragError, match="weight 0"):
        check_weights({"clip": 0, "caption": 0}, ["clip", "caption"])


def test_filters_are_typed_from_the_recorded_types_and_escaped() -> None:
    types = {"source": "str", "coco_image_id": "int", "categories_known": "bool", "score": "float"}
    built = build_filter({"source": 'a"b\\c', "coco_image_id": "139", "categories_known": "true"}, types, templates=False)
    assert built.expr == 'source == "a\\"b\\\\c" and coco_image_id == 139 and categories_known == true'
    assert not built.params
    templated = build_filter({"source": "日本"}, types, templates=True)
    assert templated.expr == "source == {f0}" and templated.params == {"f0": "日本"}
    with pytest.raises(MmragError, match="unknown filter field 'colour'"):
        build_filter({"colour": "red"}, types, templates=False)
    with pytest.raises(MmragError, match="holds int"):
        build_filter({"coco_image_id": "abc"}, types, templates=False)
    with pytest.raises(MmragError, match="true/false"):
        build_filter({"categories_known": "maybe"}, types, templates=False)
    with pytest.raises(MmragError, match="finite"):
        build_filter({"score": "nan"}, types, templates=False)


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
