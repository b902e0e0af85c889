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


def store_counts(settings: Any, text_dim: int = 0, image_dim: int | None = None) -> tuple[set[str], int]:
    """(distinct ids, rows) in the catalog: rows beyond the ids are duplicates."""
    from rag.store import CatalogStore

    with CatalogStore.open(settings) as store:
        return store.ids(), store.count()


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


# ------------------------------------------------------------------------------------------- store
def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMRAG_URI": "", "MMRAG_FUSION_WEIGHTS": ""}
    return subprocess.run([sys.executable, "-m", "mmrag.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _one_clear_line(stderr: str, *words: str) -> bool:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return len(lines) == 1 and "Traceback" not in stderr and all(w in stderr for w in words)


@case("kill_loop")
def kill_loop(ctx: Context, kills: int = 6) -> list[Row]:
    """`mmrag index` SIGKILLed at staggered points, `kills` times, then run to the end: every image exactly once."""
    import random
    import signal

    folder = ctx.folder("kill/images")
    catalog = REPO / "examples" / "catalog" / "images"
    for path in sorted(catalog.glob("*.jpg")):
        shutil.copy(path, folder / path.name)
    n = len(list(folder.iterdir()))
    data = ctx.root / "kill" / "data"
    args = [sys.executable, "-m", "mmrag.cli", "index", str(folder), "--clip-model", "none", "--batch-size", "2",
            "--quiet", "--data-dir", str(data)]
    rng = random.Random(7)
    row = Row("index killed (SIGKILL) mid-run, then resumed", tried=kills + 1)
    for _ in range(kills):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        time.sleep(rng.uniform(8, 20))  # model load takes ~5-10 s here: some kills land before, most during writing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = _cli(*args[3:])
    if final.returncode != 0:
        row.crashes += 1
        row.note = final.stderr.strip()[-120:]
    from rag.config import Settings

    ids, rows = store_counts(Settings(data_dir=data, clip_model=None))
    row.lost_rows, row.duplicate_rows = n - len(ids), rows - len(ids)
    return [row]


@case("odd_queries")
def odd_queries(ctx: Context) -> list[Row]:
    """Filter values and weights a hostile user types, in every mode and both fusion strategies."""
    from rag.config import Settings
    from rag.errors import MmragError
    from rag.search import SearchEngine

    data = ctx.root / "odd" / "data"
    catalog = REPO / "examples" / "catalog"
    from ingest.pipeline import index_folder

    settings = Settings(data_dir=data, clip_model=None)
    index_folder(catalog / "images", settings, metadata=catalog / "metadata.jsonl", show_progress=False,
                 text_embedder=ctx.text_embedder)
    values = ['C:\\dir', "trailing\\", "a\nb", "日本", 'x" or coco_split != "', "[x] (y) {z}", "it's", "", " "]
    typed = [("coco_image_id", "nan"), ("coco_image_id", "1e999"), ("categories_known", "maybe"), ("nope", "1")]
    weights = [{"caption": float("nan")}, {"bm25": float("inf")}, {"caption": -1.0}, {"caption": 0.0, "bm25": 0.0, "ocr": 0.0},
               {"colour": 1.0}]
    filters_row = Row("odd filter values (every mode, both fusions)", tried=0)
    weights_row = Row("odd fusion weights", tried=0)
    with SearchEngine.open(settings, text_embedder=ctx.text_embedder) as engine:
        for value in values:
            for mode, fusion in [("caption", None), ("bm25", None), ("hybrid", "client"), ("hybrid", "native")]:
                filters_row.tried += 1
                try:
                    got = engine.search("a cat", mode=mode, fusion=fusion, filters={"coco_split": value})
                    filters_row.unclear_errors += int(bool(got.results))  # no row holds these values
                except MmragError:
                    filters_row.unclear_errors += 1  # a literal value must match (nothing), not be refused
                except Exception as exc:  # noqa: BLE001
                    filters_row.crashes += 1
                    filters_row.note = f"{type(exc).__name__}: {exc}"[:120]
        for key, value in typed:
            filters_row.tried += 1
            try:
                engine.search("a cat", filters={key: value})
                filters_row.unclear_errors += 1  # must be refused
            except MmragError as exc:
                filters_row.unclear_errors += int(key not in str(exc))
            except Exception as exc:  # noqa: BLE001
                filters_row.crashes += 1
        for w in weights:
            weights_row.tried += 1
            try:
                engine.search("a cat", weights=w)
                weights_row.unclear_errors += 1
            except MmragError as exc:
                weights_row.unclear_errors += int("weight" not in str(exc) and "channel" not in str(exc))
            except Exception as exc:  # noqa: BLE001
                weights_row.crashes += 1
                weights_row.note = f"{type(exc).__name__}: {exc}"[:120]
    return [filters_row, weights_row]


@case("store_unreachable")
def store_unreachable(ctx: Context) -> list[Row]:
    """A Milvus URI nobody answers, and an embedded folder held by another process: one line each."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    row = Row("Milvus unreachable / embedded store held", tried=2)
    down = _cli("search", "x", "--uri", f"http://127.0.0.1:{port}", "--clip-model", "none")
    row.unclear_errors += int(not (down.returncode == 2 and _one_clear_line(down.stderr, f"127.0.0.1:{port}")))
    from rag.config import Settings
    from rag.store import CatalogStore

    data = ctx.root / "held" / "data"
    settings = Settings(data_dir=data, clip_model=None)
    CatalogStore.open(settings, create=True, dims={"text": 384}, models={"text_model": "all-MiniLM-L6-v2"}).close()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rag.config import Settings; "
                               "from rag.store import CatalogStore; from pathlib import Path; "
                               "s = CatalogStore.open(Settings(data_dir=Path(sys.argv[1]), clip_model=None)); "
                               "print('held', flush=True); time.sleep(60)", str(data)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        held = _cli("search", "x", "--data-dir", str(data))
        row.unclear_errors += int(not (held.returncode == 2 and _one_clear_line(held.stderr, "in use by another process")))
    finally:
        holder.kill()
        holder.wait()
    return [row]


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
