"""Small JPEG thumbnails for the result grid, cached in memory and (when writable) on disk."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from rag.images import BadImageError, load_image

log = logging.getLogger(__name__)

DEFAULT_SIZE = 256


def placeholder(size: int = DEFAULT_SIZE, text: str = "image missing") -> bytes:
    """A grey JPEG square saying why the real thumbnail is not shown."""
    img = Image.new("RGB", (size, size), (225, 225, 225))
    ImageDraw.Draw(img).text((10, size // 2 - 6), text[:40], fill=(90, 90, 90))
    return _jpeg(img)


def _jpeg(img: Image.Image, quality: int = 82) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def make_thumbnail(path: str | Path, size: int = DEFAULT_SIZE, *, square: bool = True) -> bytes:
    """JPEG bytes: a centred size x size crop (square=True, so grid rows line up), or the whole image
    scaled to fit a size x size box (never enlarged)."""
    img = load_image(path)
    if square:
        img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    else:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return _jpeg(img)


class ThumbnailCache:
    """Thumbnails keyed by (absolute path, mtime, file size, thumbnail size).

    An edited or replaced file gets a new key, so a stale thumbnail is never shown. The memory
    tier is an LRU of at most max_items; the disk tier (cache_dir) survives app restarts and is
    skipped silently when the folder cannot be written.
    """

    def __init__(
        self, cache_dir: Path | None = None, *, size: int = DEFAULT_SIZE, max_items: int = 512, square: bool = True
    ) -> None:
        self.size = size
        self.square = square
        self.max_items = max_items
        self.cache_dir = cache_dir
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path) -> str | None:
        try:
            absolute = os.path.abspath(path)
            stat = os.stat(absolute)
        except OSError:
            return None
        raw = f"{absolute}\0{stat.st_mtime_ns}\0{stat.st_size}\0{self.size}\0{self.square}"
        return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def get(self, path: str | Path) -> bytes:
        """Thumbnail bytes for path; a placeholder (not cached) when the file is missing or unreadable."""
        key = self.key(path)
        if key is None:
            return placeholder(self.size, "file not found")
        with self._lock:
            cached = self._memory.get(key)
            if cached is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return cached
        data = self._read_disk(key)
        if data is None:
            try:
                data = make_thumbnail(path, self.size, square=self.square)
            except BadImageError as exc:
                log.warning("no thumbnail for %s: %s", path, exc)
                return placeholder(self.size, str(exc))
            self._write_disk(key, data)
        with self._lock:
            self.misses += 1
            self._memory[key] = data
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)
        return data

    def _disk_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{key}.jpg"

    def _read_disk(self, key: str) -> bytes | None:
        target = self._disk_path(key)
        if target is None:
            return None
        try:
            return target.read_bytes()
        except OSError:
            return None

    def _write_disk(self, key: str, data: bytes) -> None:
        target = self._disk_path(key)
        if target is None:
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # atomic: a concurrent reader never sees half a file
        except OSError as exc:
            log.info("thumbnail disk cache disabled (%s)", exc)
            self.cache_dir = None
