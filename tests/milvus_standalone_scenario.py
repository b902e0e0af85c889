"""Driver for tests/test_milvus_standalone.py: run it INSIDE a private network namespace (run_in_netns).

Starts a real Milvus 2.3.x standalone, indexes sample photos through the mmrag CLI with --uri, kills the server
with SIGKILL mid-index, checks the CLI's one-line error while it is down, restarts it on the same data dir,
resumes the index, then searches by text and by image. Prints one JSON object (the observations) as its last
stdout line; the test asserts on it. Nothing here decides pass/fail except hard setup failures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.dev.milvus_standalone import die_with_parent, isolation_problem  # noqa: E402

CLI_MODULE = "mmrag.cli"  # the mmrag entry point; one place to change if the CLI moves (e.g. mmrag.cli)
PREFIX = "mmsa"
PORT = 19530  # the namespace is ours alone: the default port is free


def log(msg: str) -> None:
    print(f"[scenario {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def mentions(row: dict, word: str) -> bool:
    """Whether the row's caption text (what the caption and BM25 channels index) has the word."""
    texts = row.get("captions") or [row.get("caption") or row.get("title") or ""]
    return word in " ".join(map(str, texts)).lower()


def pick_rows(catalog: Path, n: int, word: str, n_word: int) -> list[dict]:
    """n catalog rows, up to n_word of them captioned with word (so a text search has known answers)."""
    rows = [json.loads(line) for line in (catalog / "metadata.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if (catalog / r["file"]).exists()]
    with_word = [r for r in rows if mentions(r, word)][:n_word]
    others = [r for r in rows if word not in json.dumps(r).lower()]  # no giraffe anywhere, not even in tags
    return with_word + others[: n - len(with_word)]


def copy_rows(rows: list[dict], catalog: Path, dest: Path) -> Path:
    images = dest / "images"
    images.mkdir(parents=True, exist_ok=True)
    for row in rows:
        shutil.copy(catalog / row["file"], images / Path(row["file"]).name)
    (dest / "metadata.jsonl").write_text("".join(json.dumps({**r, "file": Path(r["file"]).name}) + "\n" for r in rows))
    return images


class Server:
    """`python -m rag.dev.milvus_standalone` in its own process group (kill() takes the milvus binary with it)."""

    def __init__(self, data_dir: Path, bin_cache: Path | None) -> None:
        self.data_dir, self.bin_cache = data_dir, bin_cache
        self.proc: subprocess.Popen | None = None

    def start(self) -> dict:
        cmd = [sys.executable, "-m", "rag.dev.milvus_standalone", "--data-dir", str(self.data_dir), "--port", str(PORT)]
        if self.bin_cache:
            cmd += ["--bin-cache", str(self.bin_cache)]
        t0 = time.monotonic()
        # Own process group (kill() hits wrapper and binary at once); dies with this driver if the test kills it.
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True, preexec_fn=die_with_parent)
        line = self.proc.stdout.readline().strip()  # blocks until READY or the wrapper exits
        if not line.startswith("READY "):
            raise SystemExit(f"server did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        return {"ready_line": line, "startup_s": round(time.monotonic() - t0, 1)}

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # wrapper + milvus binary: a crash, no shutdown at all
        self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return None


def cli_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def cli(args: list[str], timeout: float = 240, background: bool = False):
    cmd = [sys.executable, "-m", CLI_MODULE, *args]
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "s": round(time.monotonic() - t0, 1)}


def client():
    from pymilvus import MilvusClient

    return MilvusClient(uri=f"http://127.0.0.1:{PORT}", timeout=30)


def our_collections(c) -> list[str]:
    # image collections only: mmrag's small `{prefix}_info` collection holds the schema record, not images
    return sorted(n for n in c.list_collections() if (n == PREFIX or n.startswith(PREFIX + "_")) and n != PREFIX + "_info")


def row_counts(c) -> dict[str, int]:
    """count(*) per collection, Strong (the default Bounded read misses fresh writes on 2.3)."""
    out = {}
    for name in our_collections(c):
        c.load_collection(name)
        out[name] = int(c.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"])
    return out


def image_rows(c) -> dict[str, dict]:
    """Per collection: how often each primary key and each image path occurs (rows without a path are skipped)."""
    out = {}
    for name in our_collections(c):
        fields = c.describe_collection(name)["fields"]
        if not any(f["name"] == "path" for f in fields):
            continue  # the store's small info collection holds no images
        c.load_collection(name)
        pk = next(f["name"] for f in fields if f.get("is_primary"))
        it = c.query_iterator(name, batch_size=500, filter="", output_fields=[pk, "path"], consistency_level="Strong")
        ids, paths = collections.Counter(), collections.Counter()
        while batch := it.next():
            for row in batch:
                if row.get("path"):
                    ids[str(row[pk])] += 1
                    paths[str(row["path"])] += 1
        it.close()
        out[name] = {"rows": sum(ids.values()), "ids": dict(ids), "paths": dict(paths)}
    return out


def one_line_error(result: dict) -> dict:
    err = result["stderr"].strip()
    return {"rc": result["rc"], "stderr_lines": err.splitlines(), "traceback": "Traceback" in err,
            "stdout": result["stdout"][-500:], "s": result.get("s")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--clip-model", required=True, help="a local CLIP folder (random weights in tests) or 'none'")
    ap.add_argument("--bin-cache", type=Path, default=None)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    problem = isolation_problem()
    if problem:
        raise SystemExit(f"refusing to run: {problem}")

    t_start = time.monotonic()
    res: dict = {"cli_module": CLI_MODULE}
    work = args.work
    rows = pick_rows(args.catalog, args.images, "giraffe", 4)
    images = copy_rows(rows, args.catalog, work / "catalog")
    metadata = work / "catalog" / "metadata.jsonl"
    res["n_images"] = len(rows)
    res["image_paths"] = sorted(str(p.resolve()) for p in images.iterdir())
    res["word_paths"] = sorted(str((images / Path(r["file"]).name).resolve()) for r in rows if mentions(r, "giraffe"))
    store = ["--uri", f"http://127.0.0.1:{PORT}", "--data-dir", str(work / "mmrag_data"), "--collection-prefix", PREFIX]
    index_args = ["index", str(images), "--metadata", str(metadata), "--clip-model", args.clip_model,
                  "--batch-size", str(args.batch_size), "--quiet", "--json", *store]

    server = Server(work / "milvus", args.bin_cache)
    try:
        res["start1"] = server.start()
        c = client()
        res["server_version"] = c.get_server_version()

        # 1. Index in the background; SIGKILL the server once the first batch is in every collection.
        log("index run 1 (to be killed)")
        run1, t_run1 = cli(index_args, background=True), time.monotonic()
        deadline, seen = t_run1 + 240, {}
        while time.monotonic() < deadline and run1.poll() is None:
            try:
                seen = row_counts(c)
            except Exception as exc:  # collections appearing / loading
                seen = {"error": str(exc)[:200]}
            if seen and "error" not in seen and all(v > 0 for v in seen.values()):
                break
            time.sleep(0.2)
        res["counts_at_kill"] = seen
        res["run1_s_to_kill"] = round(time.monotonic() - t_run1, 1)
        res["run1_finished_before_kill"] = run1.poll() is not None
        server.kill()
        log(f"killed server at {seen}")
        try:
            out, err = run1.communicate(timeout=180)
            res["run1"] = one_line_error({"rc": run1.returncode, "stdout": out, "stderr": err})
        except subprocess.TimeoutExpired:
            run1.kill()
            out, err = run1.communicate()
            res["run1"] = {"hung": True, **one_line_error({"rc": None, "stdout": out, "stderr": err})}

        # 2. While the server is down the CLI says so in one line.
        log("search while down")
        res["search_down"] = one_line_error(cli(["search", "giraffe", "--json", *store], timeout=120))

        # 3. Restart on the same data dir: what was written before the kill is there; resume the index.
        res["start2"] = server.start()
        c = client()
        res["counts_after_restart"] = row_counts(c)
        log("index run 2 (resume)")
        run2 = cli(index_args, timeout=300)
        res["run2"] = {"rc": run2["rc"], "stderr_tail": run2["stderr"][-1500:], "s": run2["s"]}
        try:
            res["run2"]["report"] = json.loads(run2["stdout"])
        except ValueError:
            res["run2"]["stdout_tail"] = run2["stdout"][-1500:]
        res["rows"] = image_rows(c)

        # 4. Text search and image search through the CLI, side by side (each is mostly its own cold start).
        log("searches")
        from PIL import Image

        # A lossless PNG copy of an indexed JPEG: same pixels, another file (its own-hit exclusion is by content hash).
        original = next(p for p in sorted(images.iterdir()) if str(p.resolve()) not in res["word_paths"])
        copy = work / "query_copy.png"
        Image.open(original).convert("RGB").save(copy)
        res["image_query_original"] = str(original.resolve())
        t0 = time.monotonic()
        running = {"search_text": cli(["search", "giraffe", "--json", *store], background=True),
                   "search_image": cli(["search", "--image", str(copy), "--json", *store], background=True)}
        for key, proc in running.items():
            out, err = proc.communicate(timeout=300)
            res[key] = {"rc": proc.returncode, "stderr_tail": err[-1500:], "s": round(time.monotonic() - t0, 1)}
            if proc.returncode == 0:
                res[key]["json"] = json.loads(out)
        c.close()
    finally:
        res["stop_rc"] = server.stop()
        res["total_s"] = round(time.monotonic() - t_start, 1)
        (work / "result.json").write_text(json.dumps(res, indent=1))  # kept beside the test's tmp dir for a look
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
