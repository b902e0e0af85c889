"""CPU seconds of one `mmrag search "..."` process on the 567-image sample, today's CLI vs the old one.

Each CLI indexes the sample caption-side (`--clip-model none`: no CLIP weights exist here) into its own data
dir once, then runs one unmeasured warm-up search (the new CLI exports its caption model to ONNX under
<data-dir>/models on first use); then one search process per run, user + sys CPU seconds of it and its children
(os.wait4), 3 runs each, interleaved (new, old, new, old, ...) so both see the same machine; median reported with
the load average before each run (the box is shared).

    python bench/search_cpu.py [--runs 3] [--old-tree /work/wt-base] [--query "a giraffe eating leaves"]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, markdown_table, shared_data  # noqa: E402

CLIS = {"new": ("mmrag",), "old": ("rag.cli",)}  # python -m ...


def cli(code: str, old_tree: Path) -> tuple[list[str], dict[str, str]]:
    # Run from the tree itself: `python -m` puts the working directory ahead of PYTHONPATH.
    env = dict(os.environ, PYTHONPATH=str(old_tree if code == "old" else REPO), TOKENIZERS_PARALLELISM="false")
    for key in ("MMRAG_URI", "MMRAG_DATA_DIR", "MMRAG_CLIP_MODEL", "MMRAG_NATIVE_HYBRID", "MMRAG_FUSION"):
        env.pop(key, None)
    return [sys.executable, "-m", *CLIS[code]], env


def index(code: str, data_dir: Path, old_tree: Path) -> dict:
    marker = data_dir / "bench-indexed.json"
    if marker.exists():
        return json.loads(marker.read_text())
    retrieval = shared_data() / "retrieval"
    base, env = cli(code, old_tree)
    started = time.perf_counter()
    subprocess.run([*base, "index", str(retrieval / "images"), "--metadata", str(retrieval / "metadata.jsonl"),
                    "--clip-model", "none", "--data-dir", str(data_dir)], env=env, check=True, cwd=env["PYTHONPATH"])
    info = {"index_s": time.perf_counter() - started}
    marker.write_text(json.dumps(info))
    return info


def one_search(code: str, data_dir: Path, query: str, old_tree: Path) -> dict:
    base, env = cli(code, old_tree)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([*base, "search", query, "--data-dir", str(data_dir), "--json"], env=env,
                          capture_output=True, text=True, cwd=env["PYTHONPATH"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the search process and every child it reaped
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{code} search exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    results = json.loads(proc.stdout)["results"]
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {"cpu_s": user + system, "user_s": user, "sys_s": system, "wall_s": wall, "load_1min": round(load, 2),
            "top3": [r["path"].rsplit("/", 1)[-1] for r in results[:3]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old-tree", type=Path, default=Path("/work/wt-base"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench9/search_cpu"))
    parser.add_argument("--query", default="a giraffe eating leaves from a tall tree")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search_cpu.json")
    args = parser.parse_args(argv)
    report: dict = {"query": args.query, "codes": {}}
    for code in CLIS:
        report["codes"][code] = {"index": index(code, args.work / code, args.old_tree), "runs": []}
        # One unmeasured search first: it writes what later searches reuse (the new CLI's ONNX caption encoder).
        report["codes"][code]["warmup"] = one_search(code, args.work / code, args.query, args.old_tree)
    for i in range(args.runs):
        for code in CLIS:
            run = one_search(code, args.work / code, args.query, args.old_tree)
            report["codes"][code]["runs"].append(run)
            print(f"run {i + 1} {code}: {run['cpu_s']:.2f} CPU s, {run['wall_s']:.2f} wall s, load {run['load_1min']}",
                  file=sys.stderr, flush=True)
    rows = []
    for code, data in report["codes"].items():
        runs = data["runs"]
        data["median_cpu_s"] = statistics.median(r["cpu_s"] for r in runs)
        data["median_wall_s"] = statistics.median(r["wall_s"] for r in runs)
        rows.append([code, f"{data['median_cpu_s']:.2f}", ", ".join(f"{r['cpu_s']:.2f}" for r in runs),
                     f"{data['median_wall_s']:.2f}", ", ".join(str(r["load_1min"]) for r in runs)])
    new, old = report["codes"]["new"]["median_cpu_s"], report["codes"]["old"]["median_cpu_s"]
    report["old_over_new"] = old / new
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown_table(["CLI", "median CPU s (user+sys)", "runs CPU s", "median wall s", "load (1 min) per run"], rows))
    print(f"\nold / new CPU: {old / new:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
