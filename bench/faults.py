"""Slow fault cases (issue 10), run through the public library: one table of crashes, lost and duplicate rows.

    .venv/bin/python bench/faults.py [--only thin_images vlm_timeout ...] [--list] [--out bench/results/faults.md]

Each case is a function registered with @case; it tries one kind of fault and returns Rows:
  tried           attempts (files, runs or calls) made with the fault present
  crashes         runs that ended in an exception or a dead process instead of a result
  lost rows       good images missing from the store afterwards (a fault must cost only itself)
  duplicate rows  stored rows beyond one per distinct id
  unclear errors  faults reported without words that say what happened (or not reported at all)
The VLM cases run against the scripted server in tests/fake_vlm_server.py: they check plumbing and error
handling only, and nothing they print is a statement about any model's quality.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the scripted VLM server

from _common import REPO, markdown_table, random_clip_dir, shared_data  # noqa: E402

MEMORY_CAP_GIB = 8  # address-space cap of the thin-image child (Milvus Lite and torch threads need ~6)


@dataclass
class Row:
    case: str
    tried: int
    crashes: int = 0
    lost_rows: int = 0
    duplicate_rows: int = 0
    unclear_errors: int = 0
    note: str = ""


CASES: dict[str, Callable[["Context"], list[Row]]] = {}


def case(name: str) -> Callable[[Callable[["Context"], list[Row]]], Callable[["Context"], list[Row]]]:
    """Register a fault case under name (run order = definition order)."""

    def register(fn: Callable[["Context"], list[Row]]) -> Callable[["Context"], list[Row]]:
        CASES[name] = fn
        return fn

    return register


class Context:
    """Shared, lazily built pieces: a scratch folder and the text embedder (loaded once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._text: Any = None

    @property
    def text_embedder(self) -> Any:
        if self._text is None:
            from rag.text_embedding import make_text_embedder

            self._text = make_text_embedder("all-MiniLM-L6-v2")
        return self._text

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def store_counts(settings: Any, text_dim: int, image_dim: int | None = None) -> tuple[set[str], int]:
    """(distinct caption ids, caption rows) in the store: rows beyond the ids are duplicates."""
    from rag.store import CatalogStore

    store = CatalogStore(settings, image_dim=image_dim, text_dim=text_dim, create=False)
    try:
        ids = store.caption_ids()
        rows = store.client.query(settings.caption_collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
        return ids, int(rows)
    finally:
        store.close()


# ----------------------------------------------------------------------------------- thin images
THIN = {"strip_1x20000.png": (1, 20000), "strip_20000x1.png": (20000, 1), "strip_1x8000.png": (1, 8000),
        "strip_3x5000.gif": (3, 5000), "strip_2x9000.bmp": (2, 9000)}
_THIN_CHILD = r"""
import json, resource, sys, time
cap = int(sys.argv[1]) * 2**30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from pathlib import Path
out = {"crash": None}
try:
    from ingest.pipeline import index_folder
    from rag.clip_embedding import ClipEmbedding
    from rag.config import Settings
    from rag.images import BadImageError
    from rag.text_embedding import make_text_embedder
    folder, data, clip_dir = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    clip = ClipEmbedding.from_pretrained(clip_dir, batch_size=8)
    started = time.perf_counter()
    report = index_folder(folder, Settings(data_dir=data, clip_model="random-clip", batch_size=8), show_progress=False,
                          clip=clip, text_embedder=make_text_embedder("all-MiniLM-L6-v2"))
    out["index_s"] = time.perf_counter() - started
    out["indexed"], out["bad_files"] = report.indexed, report.bad_files
    queries = []
    for name in sys.argv[5:]:  # the same files as `search --image` queries
        try:
            clip.get_image_embedding(folder / name)
            queries.append([name, "embedded"])
        except BadImageError as exc:
            queries.append([name, str(exc)])
    out["queries"] = queries
except BaseException as exc:
    out["crash"] = f"{type(exc).__name__}: {exc}"[:300]
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print("RESULT " + json.dumps(out))
"""


def _good_images(folder: Path, n: int) -> list[Path]:
    """n real sample photos when the shared data is there, else distinct synthetic pictures."""
    from PIL import Image

    source = sorted((shared_data() / "retrieval").glob("**/*.jpg"))[:: 37][:n]
    paths = []
    for i in range(n):
        target = folder / f"good_{i:02d}.jpg"
        if i < len(source):
            shutil.copy(source[i], target)
        else:
            Image.new("RGB", (96 + i, 64), (20 * i % 256, 90, 160)).save(target)
        paths.append(target)
    return paths


@case("thin_images")
def thin_images(ctx: Context) -> list[Row]:
    from PIL import Image

    from rag.hashing import file_sha256

    folder = ctx.folder("thin/images")
    good = _good_images(folder, 10)
    for name, size in THIN.items():
        Image.new("L", size, 255).save(folder / name)
    clip_dir = random_clip_dir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _THIN_CHILD, str(MEMORY_CAP_GIB), str(folder), str(ctx.root / "thin/data"),
                           str(clip_dir), *THIN], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(lines[-1][7:]) if lines else {"crash": f"child died (rc {proc.returncode}): {proc.stderr[-300:]}"}
    crashes = int(bool(result.get("crash")) or proc.returncode != 0)
    row = Row(f"thin images, index + search --image ({MEMORY_CAP_GIB} GiB address-space cap)", tried=2 * len(THIN),
              crashes=crashes)
    if crashes:
        row.lost_rows, row.note = len(good), str(result.get("crash"))[:120]
        return [row]
    from rag.config import Settings

    ids, rows = store_counts(Settings(data_dir=ctx.root / "thin/data"), text_dim=384, image_dim=512)
    row.lost_rows = len({file_sha256(p) for p in good} - ids)
    row.duplicate_rows = rows - len(ids)
    reasons = {Path(p).name: why for p, why in result["bad_files"]}
    clear = ("aspect ratio", "too large")
    row.unclear_errors = sum(not any(w in reasons.get(name, "") for w in clear) for name in THIN)
    row.unclear_errors += sum(not any(w in why for w in clear) for _, why in result["queries"])
    row.note = f"index {result['index_s']:.1f} s, peak RSS {result['peak_rss_mb']} MB"
    return [row]


# ------------------------------------------------------------------------------------ VLM faults
FAULT_COLOUR = (255, 0, 255)  # the one image per run the scripted server fails on
GOOD_CAPTION = "A small coloured square on a plain background."
GOOD_VERDICT = '{"defective": false, "confidence": 0.9}'


def _fault_replies() -> dict[str, tuple[Any, tuple[str, ...]]]:
    """mode -> (reply for the faulty image, words its error must contain)."""
    from fake_vlm_server import Reply

    return {
        "timeout": (Reply(text="late", delay_s=2.5), ("timed out",)),
        "http_429": (Reply(status=429, text="rate limit"), ("HTTP 429",)),
        "http_500": (Reply(status=500, text="internal error"), ("HTTP 500",)),
        "dropped_connection": (Reply(text="x", drop="mid_body"), ("dropped the connection",)),
        "truncated_length": (Reply(text='{"defective": true, "boxes": [[0.1, 0.2', finish_reason="length"), ("cut off",)),
        "non_json_body": (Reply(body="<html>502 Bad Gateway</html>"), ("not JSON", "502 Bad Gateway")),
        "wrong_json_body": (Reply(body='{"error": "model loading"}'), ("without a completion choice", "model loading")),
        "empty_reply": (Reply(text=""), ("empty",)),
        "control_characters": (Reply(text="A cat\x1b[31m on a\x00 mat"), ("control characters", "no parseable JSON")),
    }


def _responder(fault: Any) -> Callable[[Any], Any]:
    from PIL import Image

    def respond(req: Any) -> Any:
        images = req.images
        faulty = bool(images) and Image.open(io.BytesIO(images[0])).convert("RGB").getpixel((0, 0)) == FAULT_COLOUR
        if faulty:
            return fault
        return GOOD_VERDICT if "JSON" in " ".join(req.texts) else GOOD_CAPTION

    return respond


def _vlm_folder(ctx: Context, name: str, n: int = 5) -> Path:
    from PIL import Image

    folder = ctx.folder(f"vlm/{name}/images")
    for i in range(n):
        colour = FAULT_COLOUR if i == 2 else (30 * i, 120, 200 - 30 * i)
        Image.new("RGB", (48, 40), colour).save(folder / f"square_{i}.png")
    return folder


def _mentions(text: str | None, words: tuple[str, ...]) -> bool:
    return bool(text) and any(w in text for w in words)


def vlm_case(ctx: Context, mode: str, fault: Any, words: tuple[str, ...], base_url: str | None = None) -> Row:
    """One fault mode three ways: `index --captioner vlm` over 5 images (one faulty), the caption builder alone,
    and a structured inspection of the faulty image. Nothing failed may be cached."""
    from fake_vlm_server import FakeVLMServer

    from ingest.captions import CaptionBuilder
    from ingest.pipeline import index_folder
    from rag.config import Settings
    from rag.inspection.cache import VLMCache
    from rag.inspection.runner import InspectConfig, inspect_image
    from rag.vlm_client import VLMClient

    folder = _vlm_folder(ctx, mode)
    data = ctx.root / "vlm" / mode / "data"
    row = Row(f"VLM {mode.replace('_', ' ')}", tried=3)
    with FakeVLMServer(_responder(fault)) as srv:
        url = base_url or srv.base_url
        settings = Settings(data_dir=data, clip_model=None, vlm_base_url=url, vlm_model="fake-vlm", vlm_timeout_s=1.0)
        try:
            index_folder(folder, settings, vlm_captions=True, show_progress=False, text_embedder=ctx.text_embedder)
            ids, rows = store_counts(settings, text_dim=384)
            row.lost_rows, row.duplicate_rows = 5 - len(ids), rows - len(ids)
        except Exception as exc:  # noqa: BLE001 - a crash is what this counts
            row.crashes += 1
            row.lost_rows = 5
            row.note = f"index: {type(exc).__name__}: {exc}"[:120]
        builder = CaptionBuilder(settings.with_(data_dir=data / "builder"), vlm=True)
        try:
            from PIL import Image

            caption = builder.build("fault", folder / "square_2.png", Image.open(folder / "square_2.png").convert("RGB"))
            cached = builder.cache.get("fault", "vlm", "fake-vlm")
            row.unclear_errors += int(not (caption.pending and _mentions(" ".join(caption.errors), words)) or cached is not None)
        except Exception as exc:  # noqa: BLE001
            row.crashes += 1
            row.note = row.note or f"caption: {type(exc).__name__}: {exc}"[:120]
        finally:
            builder.close()
        client = VLMClient(url, "fake-vlm", timeout_s=1.0, max_retries=1, backoff_s=0.05)
        with VLMCache(data / "vlm_cache.sqlite") as cache:
            try:
                answer = inspect_image(client, folder / "square_2.png", InspectConfig("structured"), cache)
                row.unclear_errors += int(answer.error is None or not _mentions(answer.error, words) or len(cache) > 0)
            except Exception as exc:  # noqa: BLE001 - an endpoint-wide error is a clear one-liner, not a crash
                clear = _mentions(str(exc), words) or "unreachable" in str(exc)
                row.unclear_errors += int(not clear)
    return row


@case("vlm_faults")
def vlm_faults(ctx: Context) -> list[Row]:
    return [vlm_case(ctx, mode, fault, words) for mode, (fault, words) in _fault_replies().items()]


@case("vlm_endpoint_down")
def vlm_endpoint_down(ctx: Context) -> list[Row]:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [vlm_case(ctx, "endpoint_down", None, ("unreachable",), base_url=f"http://127.0.0.1:{port}/v1")]


# ------------------------------------------------------------------------------------------- main
def run(names: list[str]) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mmrag_faults_") as tmp:
        ctx = Context(Path(tmp))
        for name in names:
            started = time.perf_counter()
            print(f"[faults] {name} ...", file=sys.stderr, flush=True)
            try:
                rows.extend(CASES[name](ctx))
            except Exception as exc:  # noqa: BLE001 - the bench itself keeps going
                rows.append(Row(name, tried=1, crashes=1, note=f"case failed: {type(exc).__name__}: {exc}"[:160]))
            print(f"[faults] {name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[Row]) -> str:
    headers = ["case", "tried", "crashes", "lost rows", "duplicate rows", "unclear errors", "note"]
    body = [[r.case, r.tried, r.crashes, r.lost_rows, r.duplicate_rows, r.unclear_errors, r.note] for r in rows]
    total = ["**total**", *(sum(getattr(r, f) for r in rows) for f in ("tried", "crashes", "lost_rows", "duplicate_rows",
                                                                       "unclear_errors")), ""]
    return markdown_table(headers, body + [total])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--out", type=Path, help="also write the table (.md) and raw rows (.json) here")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = run(args.only or list(CASES))
    text = ("Fault cases (bench/faults.py). VLM rows use the scripted server: error handling only, no quality.\n\n"
            + table(rows) + "\n")
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    failed = sum(r.crashes + r.lost_rows + r.duplicate_rows + r.unclear_errors for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
