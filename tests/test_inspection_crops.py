"""Crop/zoom: tiling, mapping tile answers back to image pixels, aggregation, and the round trip via a VLM server."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fake_vlm_server import FakeVLMServer, Reply
from PIL import Image

from rag.inspection.answer_parser import Answer, error_answer
from rag.inspection.boxes import Box, iou
from rag.inspection.cache import VLMCache
from rag.inspection.crops import MIN_SIDE, aggregate, crop_tile, make_tiles, map_to_image
from rag.inspection.runner import InspectConfig, inspect_image
from rag.vlm_client import VLMClient


@pytest.mark.parametrize(("w", "h", "spec", "n"), [(200, 100, "none", 1), (200, 100, "2x2", 4), (301, 257, "3x3", 9), (512, 207, "3x3", 9)])
def test_tiles_cover_image_and_overlap(w, h, spec, n):
    tiles = make_tiles(w, h, spec)
    assert len(tiles) == n and [t.index for t in tiles] == list(range(n))
    covered = np.zeros((h, w), bool)
    for t in tiles:
        x0, y0, x1, y1 = t.xyxy
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    if n > 1:
        k = int(n**0.5)
        a, b = tiles[0], tiles[1]  # horizontal neighbours share ~20% of a tile
        assert b.xyxy[0] < a.xyxy[2]
        assert (a.xyxy[2] - b.xyxy[0]) == pytest.approx(0.2 * a.width, abs=2)
        assert tiles[k].xyxy[1] < tiles[0].xyxy[3]


def test_bad_crop_spec():
    with pytest.raises(ValueError, match="unknown crop spec"):
        make_tiles(10, 10, "4x4")


def test_crop_is_full_resolution_then_zoomed():
    img = Image.new("RGB", (600, 300))
    tile = make_tiles(600, 300, "3x3")[4]
    crop, scale = crop_tile(img, tile)
    assert scale == pytest.approx(MIN_SIDE / max(tile.width, tile.height))
    assert max(crop.size) == pytest.approx(MIN_SIDE, abs=1)
    big = make_tiles(2000, 2000, "2x2")[0]
    crop2, scale2 = crop_tile(Image.new("RGB", (2000, 2000)), big)
    assert scale2 == 1.0 and crop2.size == (big.width, big.height)  # never shrunk


def test_map_box_and_cell_back_to_image():
    tiles = make_tiles(300, 200, "2x2")
    t = tiles[3]  # bottom-right tile
    ans = Answer(True, ("crack",), (Box((10, 20, 30, 40), "crack"), Box((0, 0, 50, 50), "crack", from_cell=True)))
    mapped = map_to_image(ans, t, scale=2.0)
    x0, y0 = t.xyxy[:2]
    assert mapped.boxes[0].xyxy == pytest.approx((x0 + 5, y0 + 10, x0 + 15, y0 + 20))
    assert mapped.boxes[1].from_cell and mapped.boxes[1].xyxy == pytest.approx((x0, y0, x0 + 25, y0 + 25))


def test_aggregate_rules():
    ok, unc = Answer(False, confidence=0.9), Answer(None, confidence=0.4)
    pos = Answer(True, ("spur",), (Box((0, 0, 10, 10), "spur"),), confidence=0.7)
    pos2 = Answer(True, ("spur", "short"), (Box((2, 2, 11, 11), "spur"),), confidence=0.8)
    err = error_answer("VLM endpoint x timed out")
    a = aggregate([ok, pos, pos2, err])
    assert a.defective is True and a.types == ("spur", "short") and a.confidence == 0.8
    assert len(a.boxes) == 1 and a.boxes[0].xyxy == (0, 0, 11, 11)  # overlapping tile boxes merged
    assert aggregate([ok, err]).error.startswith("1/2 tiles failed")  # cannot claim "no defect"
    assert aggregate([ok, unc]).abstained and aggregate([ok, unc]).confidence == 0.4
    assert aggregate([ok, Answer(False, confidence=0.6)]).defective is False
    assert aggregate([ok, Answer(False, confidence=0.6)]).confidence == 0.6


def _dark_box_responder(log):
    """A scripted 'VLM' that reports the dark square in a tile as fractions of the tile it received."""

    def respond(req):
        img = np.asarray(Image.open(io.BytesIO(req.images[0])).convert("L"))
        log.append(img.shape)
        ys, xs = np.nonzero(img < 60)
        if len(xs) == 0:
            return json.dumps({"defective": "no", "confidence": 0.9})
        h, w = img.shape
        box = [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]
        return json.dumps({"defective": "yes", "defect_types": ["blowhole"], "boxes": [box], "confidence": 0.8})

    return respond


@pytest.mark.parametrize("spec", ["none", "2x2", "3x3"])
def test_round_trip_through_server_maps_box_to_image(tmp_path, spec):
    img = Image.new("RGB", (400, 240), (200, 200, 200))
    truth = (250, 150, 290, 190)
    img.paste((0, 0, 0), truth)
    path = tmp_path / "part.png"
    img.save(path)
    log = []
    with FakeVLMServer(_dark_box_responder(log)) as srv:
        client = VLMClient(srv.base_url, "fake", timeout_s=5)
        ans = inspect_image(client, path, InspectConfig("structured", spec))
    n = {"none": 1, "2x2": 4, "3x3": 9}[spec]
    assert len(srv.chat_requests) == n
    if spec != "none":
        assert all(max(s) >= MIN_SIDE - 1 for s in log)  # every tile was zoomed
    assert ans.defective is True and ans.types == ("blowhole",)
    assert len(ans.boxes) == 1
    assert iou(ans.boxes[0].xyxy, truth) > 0.85


def test_tile_errors_and_cache(tmp_path):
    img = Image.new("RGB", (200, 200), (200, 200, 200))
    path = tmp_path / "clean.png"
    img.save(path)
    script = ['{"defective": "no"}', "not json at all", '{"defective": "no"}', Reply(status=500), Reply(status=500)]
    with FakeVLMServer(script, default='{"defective": "no", "confidence": 0.7}') as srv:
        client = VLMClient(srv.base_url, "fake", max_retries=1, backoff_s=0.01)
        with VLMCache(tmp_path / "c.sqlite") as cache:
            first = inspect_image(client, path, InspectConfig("structured", "2x2"), cache)
            assert first.error is not None and first.error.startswith("2/4 tiles failed")  # malformed + 500s: no verdict
            assert len(cache) == 2  # only usable replies are cached
            n = len(srv.chat_requests)
            second = inspect_image(client, path, InspectConfig("structured", "2x2"), cache)
            assert len(srv.chat_requests) == n + 2  # only the two failed tiles are asked again
            assert second.defective is False and second.confidence == 0.7
            third = inspect_image(client, path, InspectConfig("structured", "2x2"), cache)
            assert len(srv.chat_requests) == n + 2 and third.defective is False  # all from cache
            assert cache.hits >= 6
            # a different model or prompt is a different key
            other = VLMClient(srv.base_url, "other-model")
            inspect_image(other, path, InspectConfig("structured", "none"), cache)
            assert len(srv.chat_requests) == n + 3
