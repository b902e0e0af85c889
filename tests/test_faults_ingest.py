"""Fault cases from issue 10 on the ingest side: thin images, empty files, silent skips, hashed bytes, EXIF warnings.

Random CLIP weights only exercise shapes and memory; no quality is claimed from them.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import copy_sample
from ingest.discover import discover
from rag.hashing import file_sha256
from rag.images import BadImageError, decode_image, load_image, read_image


def thin_png(path: Path, width: int = 1, height: int = 20000) -> Path:
    Image.new("L", (width, height), 255).save(path, optimize=True)
    return path


def corrupt_exif_jpeg(path: Path) -> Path:
    """A valid JPEG whose EXIF says a tag holds 1000 bytes the segment does not have (Pillow warns)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), "red").save(buf, "JPEG")
    data = buf.getvalue()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 0x010F, 2, 1000, 26)
    app1 = b"Exif\x00\x00" + tiff + struct.pack("<I", 0)
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    return path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------------------------------- 1. thin images
def test_thin_png_1x20000_is_refused_by_load_and_read_without_decoding(tmp_path: Path) -> None:
    path = thin_png(tmp_path / "strip.png")
    assert path.stat().st_size < 400  # the case: a 164-byte file
    started = time.perf_counter()
    for loader in (load_image, read_image):
        with pytest.raises(BadImageError, match=r"extreme aspect ratio \(1x20000 px is 20,000:1, limit 25:1\)"):
            loader(path)
    assert time.perf_counter() - started < 1.0


def test_ordinary_panorama_still_loads(tmp_path: Path) -> None:
    Image.new("RGB", (2400, 300), "blue").save(tmp_path / "pano.jpg")  # 8:1
    assert load_image(tmp_path / "pano.jpg").size == (2400, 300)


@pytest.mark.slow
def test_thin_png_as_search_image_query_is_refused_in_clip_without_memory(tmp_path: Path, clip_model) -> None:
    """`search --image` and app uploads embed through ClipEmbedding: the same guard, with the file name."""
    path = thin_png(tmp_path / "strip.png")
    before, started = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(BadImageError, match=r"strip.png: extreme aspect ratio"):
        clip_model.get_image_embedding(path)
    with pytest.raises(BadImageError, match="extreme aspect ratio"):  # an in-memory image (app) too
        clip_model.get_image_embedding(Image.new("RGB", (2, 300)))
    with pytest.raises(BadImageError, match="extreme aspect ratio"):  # and raw bytes
        clip_model.get_image_embedding(path.read_bytes())
    assert time.perf_counter() - started < 2.0
    assert _peak_rss_mb() - before < 200


@pytest.mark.slow
def test_clip_batch_with_one_bad_image_keeps_the_others(tmp_path: Path, clip_model) -> None:
    good_a = Image.new("RGB", (64, 48), (200, 30, 30))
    good_b = tmp_path / "b.png"
    Image.new("RGB", (40, 80), (20, 30, 200)).save(good_b)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good_b.read_bytes()[:60])
    result = clip_model.embed_images_isolated([good_a, Image.new("RGB", (1, 20000)), good_b, corrupt])
    assert sorted(result.errors) == [1, 3]
    assert "extreme aspect ratio" in result.errors[1] and "corrupt.png" in result.errors[3]
    assert result.vectors[1] is None and result.vectors[3] is None
    np.testing.assert_allclose(result.vectors[0], clip_model.get_image_embedding(good_a), atol=1e-2)
    np.testing.assert_allclose(result.vectors[2], clip_model.get_image_embedding(good_b), atol=1e-2)


@pytest.mark.slow
def test_index_folder_thin_png_costs_only_itself(tmp_path: Path, retrieval_data, retrieval_rows, clip_model,
                                                 text_model) -> None:
    from ingest.pipeline import index_folder
    from rag.config import Settings

    images = copy_sample(retrieval_rows, retrieval_data, tmp_path, 6, step=37)
    thin_png(images / "aaa_strip.png")
    settings = Settings(data_dir=tmp_path / "data", clip_model="random-clip", batch_size=8)
    before = _peak_rss_mb()
    report = index_folder(images, settings, show_progress=False, clip=clip_model, text_embedder=text_model)
    assert report.indexed == 6 and report.total_in_store == 6
    bad = {Path(p).name: why for p, why in report.bad_files}
    assert list(bad) == ["aaa_strip.png"] and "extreme aspect ratio" in bad["aaa_strip.png"]
    assert _peak_rss_mb() - before < 1500  # the strip alone took 4+ GB before the guard


# ------------------------------------------------------------------------------ 2./3. discovery reasons
def test_zero_byte_files_are_bad_files_never_duplicates(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.png", "c.bmp", "sub/d.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = discover(tmp_path)
    assert found.images == []
    assert sorted((p.relative_to(tmp_path).as_posix(), why) for p, why in found.skipped) == [
        ("a.jpg", "empty file"), ("b.png", "empty file"), ("c.bmp", "empty file"), ("sub/d.jpg", "empty file")]


@pytest.mark.slow
def test_index_folder_zero_byte_files_not_reported_as_duplicates(tmp_path: Path, text_model) -> None:
    from ingest.pipeline import index_folder
    from rag.config import Settings

    folder = tmp_path / "zero"
    folder.mkdir()
    for i in range(6):
        (folder / f"empty{i}.bmp").write_bytes(b"")
    Image.new("RGB", (32, 32), "green").save(folder / "green_square.png")
    report = index_folder(folder, Settings(data_dir=tmp_path / "data", clip_model=None), show_progress=False,
                          text_embedder=text_model)
    assert report.duplicates == [] and report.indexed == 1
    assert sorted(Path(p).name for p, why in report.bad_files if why == "empty file") == [f"empty{i}.bmp" for i in range(6)]


def test_silent_skips_dangling_loop_device_fifo_folder_all_get_reasons(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "real.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")
    os.symlink("/dev/null", tmp_path / "device.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "x.jpg").mkdir()
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "x.jpg" / "inside.png")
    os.symlink(tmp_path / "real.jpg", tmp_path / "link_to_real.jpg")
    os.symlink(tmp_path / "x.jpg", tmp_path / "folder_link")
    (tmp_path / ".hidden.jpg").write_bytes(b"")  # hidden: ignored on purpose
    started = time.perf_counter()
    found = discover(tmp_path)
    assert time.perf_counter() - started < 5  # the FIFO is never opened (that would block)
    assert [p.relative_to(tmp_path).as_posix() for p in found.images] == ["link_to_real.jpg", "real.jpg", "x.jpg/inside.png"]
    reasons = {p.name: why for p, why in found.skipped}
    assert reasons == {
        "dangling.jpg": f"dangling symlink (target {tmp_path / 'gone.jpg'} missing)",
        "self.jpg": "symlink loop",
        "device.jpg": "symlink to a character device, not a file",
        "pipe.jpg": "not a regular file (a FIFO)",
        "x.jpg": "a folder named like an image (its contents are indexed)",
        "folder_link": "symlink to a folder (not followed)",
    }


def test_single_path_fifo_and_dangling_link_are_reasons_not_hangs(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    assert discover(tmp_path / "pipe.png").skipped == [(tmp_path / "pipe.png", "not a regular file (a FIFO)")]
    assert discover(tmp_path / "dangling.png").images == []
    with pytest.raises(BadImageError, match=r"not a regular file \(a FIFO\)"):
        read_image(tmp_path / "pipe.png")


# ------------------------------------------------------------------------ 4. hash the bytes you decode
def test_read_image_digest_matches_the_decoded_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(path)
    loaded = read_image(path)
    assert loaded.sha256 == file_sha256(path)
    assert loaded.image.size == (20, 10) and loaded.image.getpixel((5, 5)) == (1, 2, 3)
    path.write_bytes(b"")  # emptied after reading: the digest still describes what was decoded
    assert loaded.sha256 != file_sha256(path)
    with pytest.raises(BadImageError, match="empty file"):
        read_image(path)


def test_read_image_file_changed_between_hash_and_load_gets_new_digest(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 10), "red").save(path)
    old = file_sha256(path)
    Image.new("RGB", (20, 10), "blue").save(path)  # replaced before the load
    loaded = read_image(path)
    assert loaded.sha256 != old and loaded.sha256 == file_sha256(path)
    assert loaded.image.getpixel((0, 0)) == (0, 0, 255)


# -------------------------------------------------------------------------------- 5. corrupt EXIF
def test_corrupt_exif_warning_is_returned_not_printed(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = corrupt_exif_jpeg(tmp_path / "exif.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping the loader fails the test
        loaded = read_image(path)
        image = load_image(path)
        decoded, lines = decode_image(path.read_bytes())
    assert loaded.image.size == image.size == decoded.size == (16, 8)
    assert loaded.warnings == lines == ["UserWarning: Tag data larger than file. Skipping tag 271"]
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_upload_check_uses_the_same_thin_image_guard() -> None:
    from rag.app.uploads import BadUploadError, check_upload

    buf = io.BytesIO()
    Image.new("L", (1, 20000), 255).save(buf, "PNG")
    with pytest.raises(BadUploadError, match="extreme aspect ratio"):
        check_upload("strip.png", buf.getvalue())
