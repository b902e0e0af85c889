"""`mmrag inspect --eval`: pixel baseline (always) + VLM configurations (when an endpoint is configured) ->
report.md + report.json + overlay PNGs for every failure under eval/reports/inspection/.

VLM rows say "not run" unless a real endpoint answered; scripted test servers never write here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from rag.inspection.scoring import ImageOutcome, compare, score_all, slices, summarize  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.errors import MmragError, VLMUnavailableError  # noqa: E402
from rag.inspection.answer_parser import Answer  # noqa: E402
from rag.inspection import pixel_baseline as pb  # noqa: E402
from rag.inspection.cache import VLMCache  # noqa: E402
from rag.inspection.labels import REPO_ROOT, ImageLabel, load_labels, resolve_data_root  # noqa: E402
from rag.inspection.overlay import draw_boxes  # noqa: E402
from rag.inspection.runner import InspectConfig, run_baseline, run_vlm  # noqa: E402
from rag.vlm_client import VLMClient  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "eval" / "reports" / "inspection"
DEFAULT_CONFIGS = (
    InspectConfig("structured", "none"),
    InspectConfig("structured", "3x3"),
    InspectConfig("uncertain", "none"),
    InspectConfig("uncertain", "3x3"),
    InspectConfig("plain", "none"),
)
BASELINE = "pixel-baseline"
OVERLAY_SIDE = 256
FILL_COMMAND = (
    "MMRAG_VLM_BASE_URL=http://HOST:PORT/v1 MMRAG_VLM_MODEL=MODEL_NAME [MMRAG_VLM_API_KEY=KEY] "
    "mmrag inspect --eval --labels inspection_labels.json --out eval/reports/inspection/"
)


def _slug(name: str) -> str:
    return name.replace("/", "_").replace(" ", "_")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _rate_cell(s: Mapping[str, Any], key: str) -> str:
    num_den = {
        "miss_rate": ("fn", ("tp", "fn")),
        "false_alarm_rate": ("fp", ("fp", "tn")),
        "accuracy": (("tp", "tn"), ("answered",)),
        "grounded_detection_rate": (None, ("tp", "fn")),
        "abstention_rate": ("abstain", ("answered", "abstain")),
    }
    v = s.get(key)
    if v is None:
        return "–"
    if key in num_den:
        num_keys, den_keys = num_den[key]
        den = sum(s[k] for k in den_keys)
        if num_keys is None:
            num = round(v * den)
        else:
            num = sum(s[k] for k in ((num_keys,) if isinstance(num_keys, str) else num_keys))
        return f"{v:.2f} ({num}/{den})"
    if key == "box_recall":
        return f"{v:.2f} (of {s['gold_boxes']})"
    if key == "loc_hit_rate":
        return f"{v:.2f} (of {s['loc_given']})"
    return _fmt(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


MAIN_KEYS = ("miss_rate", "false_alarm_rate", "accuracy", "type_accuracy", "loc_hit_rate", "grounded_detection_rate",
             "box_recall", "box_type_accuracy", "box_precision")
MAIN_HEADER = ["n", "miss rate", "false-alarm rate", "accuracy", "type acc. (image)", "loc. hit rate", "grounded detection",
               "box recall", "box type acc.", "box precision"]


def _summary_rows(named: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    return [[name, s["n"]] + [_rate_cell(s, k) for k in MAIN_KEYS] for name, s in named.items()]


def _rel(path: Path | str) -> str:
    """Repo-relative path for the report (absolute when outside the repo's parent, e.g. a temp dir)."""
    rel = os.path.relpath(Path(path).resolve(), REPO_ROOT.resolve())
    return rel if not rel.startswith("../..") else str(Path(path).resolve())


# --- overlays ----------------------------------------------------------------------------------------
def compact_png(img: Image.Image, grays: int = 32) -> Image.Image:
    """Palette image: the photo as `grays` gray levels plus the exact box colours (keeps PNGs ~10-30 kB)."""
    import numpy as np

    from rag.inspection.overlay import CELL, GOLD, PRED

    rgb = np.asarray(img.convert("RGB"))
    lum = np.asarray(img.convert("L")).astype(np.int32)
    idx = (lum * grays // 256).astype(np.uint8)
    colours = [GOLD, PRED, CELL]
    for i, c in enumerate(colours):
        idx[np.all(rgb == c, axis=-1)] = grays + i
    palette = [v for g in range(grays) for v in (g * 255 // (grays - 1),) * 3] + [v for c in colours for v in c]
    out = Image.fromarray(idx, mode="P")
    out.putpalette(palette)
    return out
def write_overlays(
    run: str, outcomes: list[ImageOutcome], answers: Mapping[str, Answer], labels: Mapping[str, ImageLabel],
    data_root: Path, out_dir: Path,
) -> dict[str, str]:
    """One small palette PNG per failure (gold green, predicted red); returns file -> relative PNG path."""
    folder = out_dir / "failures" / _slug(run)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for o in outcomes:
        if not o.failed:
            continue
        lab, ans = labels[o.file], answers.get(o.file)
        with Image.open(data_root / lab.file) as img:
            pred = ans.boxes if ans is not None else ()
            over = draw_boxes(img, lab.boxes, pred, max_side=OVERLAY_SIDE, caption=f"{o.status}: {', '.join(o.pred_types) or o.verdict}")
        target = folder / (Path(o.file).stem + ".png")
        compact_png(over).save(target, optimize=True)
        paths[o.file] = str(target.relative_to(out_dir))
    return paths


# --- instructive failures --------------------------------------------------------------------------
def pick_instructive(outcomes: list[ImageOutcome], split: Mapping[str, str]) -> list[tuple[str, ImageOutcome]]:
    """Three failures that teach something different: the biggest defect missed, the worst false alarm,
    and a detection in the wrong place (or else the smallest defect missed). Test split preferred."""
    def pref(o: ImageOutcome) -> int:
        return 0 if split.get(o.file) == "test" else 1

    picks: list[tuple[str, ImageOutcome]] = []
    fns = [o for o in outcomes if o.status == "FN"]
    if fns:
        o = min(fns, key=lambda o: (pref(o), -max((g.area_frac for g in o.gold_boxes), default=0)))
        picks.append(("largest defect missed", o))
    fps = [o for o in outcomes if o.status == "FP"]
    if fps:
        o = min(fps, key=lambda o: (pref(o), -o.n_pred_boxes, o.file))
        picks.append(("false alarm on a defect-free image", o))
    wrong_place = [o for o in outcomes if o.localised is False or (o.status == "TP" and o.type_hit is False)]
    if wrong_place:
        o = min(wrong_place, key=lambda o: (pref(o), o.localised is not False, -o.n_pred_boxes, o.file))
        picks.append(("defect found, but wrong place or wrong type", o))
    elif len(fns) > 1:
        rest = [o for o in fns if all(o is not p for _, p in picks)]
        o = min(rest, key=lambda o: (pref(o), min((g.area_frac for g in o.gold_boxes), default=1)))
        picks.append(("smallest defect missed", o))
    return picks[:3]


def _describe(o: ImageOutcome, lab: ImageLabel, ans: Answer | None) -> str:
    boxes = ans.boxes if ans is not None else ()
    said = {
        "FN": "answered **no defect**",
        "FP": f"answered **defective** with {len(boxes)} box(es) ({', '.join(o.pred_types) or 'no type'})",
        "TP": f"answered **defective** ({', '.join(o.pred_types) or 'no type'}), {len(boxes)} box(es), "
        f"{o.n_pred_on_gold} on a gold box; {sum(g.hit for g in o.gold_boxes)}/{len(o.gold_boxes)} gold boxes hit",
        "abstain": "answered **uncertain**",
        "error": f"gave **no usable answer** ({o.error})",
    }.get(o.status, o.status)
    return f"Gold: {lab.note} The detector {said}."


def write_plot(runs: Mapping[str, list[ImageOutcome]], out: Path) -> Path:
    """Per defect type and size: share of defective images caught (top) and of gold boxes hit (bottom);
    false-alarm rate on defect-free images at the right of the top panel. One bar per measured run."""
    first = next(iter(runs.values()))
    types = sorted({t for o in first for t in o.gold_types})
    top_groups = types + ["tiny", "larger", "FALSE ALARM\n(defect-free)"]
    bottom_groups = types + ["tiny boxes", "larger boxes"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5.6), sharex=False)
    width = 0.8 / max(1, len(runs))
    for i, (name, outs) in enumerate(runs.items()):
        top, bottom = [], []
        for g in top_groups:
            if g in types:
                top.append(summarize(o for o in outs if g in o.gold_types)["catch_rate"] or 0.0)
            elif g in ("tiny", "larger"):
                top.append(summarize(o for o in outs if o.size_bucket == g)["catch_rate"] or 0.0)
            else:
                top.append(summarize(o for o in outs if not o.gold_defective)["false_alarm_rate"] or 0.0)
        for g in bottom_groups:
            if g in types:
                flt = lambda b, g=g: b.label == g  # noqa: E731
            else:
                flt = lambda b, g=g: b.size == g.split()[0]  # noqa: E731
            bottom.append(summarize((o for o in outs if o.gold_defective), box_filter=flt)["box_recall"] or 0.0)
        ax1.bar([x + i * width for x in range(len(top_groups))], top, width, label=name)
        ax2.bar([x + i * width for x in range(len(bottom_groups))], bottom, width, label=name)
    for ax, groups, title in (
        (ax1, top_groups, "Defective images caught (higher is better); false alarms on defect-free images (lower is better)"),
        (ax2, bottom_groups, "Gold boxes found at the right place (IoU >= 0.1 or centre inside), by box type and size"),
    ):
        ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(groups))])
        ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# --- main entry --------------------------------------------------------------------------------------
def _vlm_client(settings: Settings) -> tuple[VLMClient | None, str | None]:
    if not (settings.vlm_base_url and settings.vlm_model):
        return None, "not run: no VLM endpoint configured (MMRAG_VLM_BASE_URL / MMRAG_VLM_MODEL unset)"
    return VLMClient.from_settings(settings), None


def run_eval(
    labels_path: Path,
    out_dir: Path,
    settings: Settings,
    configs: tuple[InspectConfig, ...] = DEFAULT_CONFIGS,
    limit: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
    client: VLMClient | None = None,
) -> dict[str, Any]:
    """Score the pixel baseline and every VLM configuration; write the report; return the JSON payload."""
    labels = load_labels(labels_path)
    data_root = resolve_data_root(labels_path)
    fitted = pb.fitted_split(labels.values())  # tune/test mean something only for the set the thresholds were fitted on
    if limit:
        labels = dict(list(labels.items())[:limit])
    missing = [f for f in labels if not (data_root / f).is_file()]
    if missing:
        raise MmragError(
            f"{len(missing)} labelled images not found under {data_root} (e.g. {missing[0]}); set MMRAG_SHARED_DATA"
        )
    split = {f: fitted[f] for f in labels} if fitted else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "failures").is_dir():
        shutil.rmtree(out_dir / "failures")  # stale overlays from an earlier run

    t0 = time.perf_counter()
    base_answers = run_baseline(labels.values(), data_root, progress=progress)
    base_ms = 1000 * (time.perf_counter() - t0) / max(1, len(labels))
    runs_answers: dict[str, dict[str, Answer]] = {BASELINE: base_answers}
    not_run: dict[str, str] = {}

    vlm_problem: str | None = None
    if client is None:
        client, reason = _vlm_client(settings)
        if reason:
            not_run = {c.name: reason for c in configs}
    if client is not None:
        cache = VLMCache(settings.data_dir / "vlm_cache.sqlite") if use_cache else None
        items = [(f, data_root / f) for f in labels]
        for cfg in configs:
            if vlm_problem:
                not_run[cfg.name] = f"not run: {vlm_problem}"
                continue
            try:
                runs_answers[cfg.name] = run_vlm(client, items, cfg, cache, progress=progress)
            except VLMUnavailableError as exc:
                vlm_problem = str(exc)
                not_run[cfg.name] = f"not run: {vlm_problem}"
                print(f"error: {vlm_problem}", file=sys.stderr)
        if cache is not None:
            cache.close()

    outcomes = {name: score_all(labels, ans) for name, ans in runs_answers.items()}
    summaries = {name: summarize(outs) for name, outs in outcomes.items()}
    base_out = outcomes[BASELINE]
    overlays = {
        name: write_overlays(name, outs, runs_answers[name], labels, data_root, out_dir) for name, outs in outcomes.items()
    }
    notes_path = out_dir / "failure_notes.yaml"
    curated = yaml.safe_load(notes_path.read_text()) if notes_path.is_file() else {}
    curated = curated or {}
    instructive = []
    for why, o in pick_instructive(base_out, split):
        instructive.append(
            {
                "run": BASELINE,
                "why_chosen": why,
                "file": o.file,
                "split": split.get(o.file),
                "status": o.status,
                "facts": _describe(o, labels[o.file], base_answers.get(o.file)),
                "analysis": curated.get(o.file, ""),
                "overlay": overlays[BASELINE].get(o.file),
            }
        )
    measured = {name: outs for name, outs in outcomes.items()}
    write_plot(measured, out_dir / "detection_by_type.png")

    payload: dict[str, Any] = {
        "labels": _rel(labels_path),
        "data_root": _rel(data_root),
        "n_images": len(labels),
        "limited": bool(limit),
        "split_counts": {s: sum(v == s for v in split.values()) for s in ("tune", "test")} if fitted else None,
        "baseline": {
            "ms_per_image": round(base_ms, 1),
            "all": summaries[BASELINE],
            "test_split": summarize(o for o in base_out if split[o.file] == "test") if fitted else None,
            "tune_split": summarize(o for o in base_out if split[o.file] == "tune") if fitted else None,
            "methods": {m: sum(a.extra.get("method") == m for a in base_answers.values()) for m in ("template-diff", "pcb-drc", "tile-stats")},
            "slices_all": slices(base_out),
            "slices_test": slices(o for o in base_out if split[o.file] == "test") if fitted else None,
        },
        "vlm": {
            "endpoint": client.base_url if client is not None else None,
            "model": client.model if client is not None else None,
            "runs": {name: {"summary": summaries[name], "slices": slices(outcomes[name])} for name in runs_answers if name != BASELINE},
            "not_run": not_run,
            "error": vlm_problem,
            "fill_command": FILL_COMMAND,
        },
        "comparison": compare({BASELINE: summaries[BASELINE], **{c.name: summaries.get(c.name) for c in configs}}),
        "instructive_failures": instructive,
        "overlays": overlays,
        "per_image": {name: [o.to_dict() | {"split": split.get(o.file)} for o in outs] for name, outs in outcomes.items()},
        "answers": {name: {f: a.to_dict() for f, a in ans.items()} for name, ans in runs_answers.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out_dir / "report.md").write_text(render_markdown(payload, configs))
    return payload


def _split_sentence(p: dict[str, Any]) -> str:
    if not p["split_counts"]:
        return ("Thresholds were fitted on the tune split of the repository's inspection_labels.json; these labels are "
                "another set, so no tune/test split is reported for them.")
    return (f"Thresholds were chosen on the **tune split only** ({p['split_counts']['tune']} images, every 3rd image of "
            f"each source/kind group; `scripts/tune_pixel_baseline.py`); the **test split** ({p['split_counts']['test']} "
            "images) was not used to fit any threshold (the methods themselves were designed after looking at a handful "
            "of images of both kinds).")


def render_markdown(p: dict[str, Any], configs: tuple[InspectConfig, ...]) -> str:
    b = p["baseline"]
    measured_vlm = p["vlm"]["runs"]
    out = [
        "# Inspection report",
        "",
        f"{p['n_images']} labelled images ({p['labels']}; data {p['data_root']})."
        + (" **Partial run (--limit).**" if p["limited"] else ""),
        "Regenerate: `mmrag inspect --eval` (or `python -m rag.inspection.cli --eval`). Metric definitions: "
        "`rag/inspection/scoring.py`. Overlays: gold boxes green, predicted red, grid-cell answers dashed orange.",
        "",
        "## Pixel baseline (measured here, no model weights)",
        "",
        f"Template difference with a ±{pb.PCB_TOL} px tolerance band for the {b['methods']['template-diff']} PCB scans "
        f"that have an aligned template; a design-rule check (tiny copper islands/holes) for the {b['methods']['pcb-drc']} "
        f"PCB scans without one (the defect-free templates themselves); reference-free dark-blob statistics for the "
        f"{b['methods']['tile-stats']} magnetic tiles. "
        + _split_sentence(p) + f" {b['ms_per_image']} ms per image on this CPU (2 cores, shared).",
        "",
        _table(["images"] + MAIN_HEADER, _summary_rows(
            ({"test split (held out)": b["test_split"], "tune split": b["tune_split"]} if p["split_counts"] else {})
            | {"all": b["all"]})),
        "",
        f"Confusion (all): TP {b['all']['tp']}, FP {b['all']['fp']}, FN {b['all']['fn']}, TN {b['all']['tn']}. "
        "The baseline never abstains and gives no calibrated confidence, so abstention and confident-but-wrong do not apply to it.",
        "",
        "### By source",
        "",
        _table(["source"] + MAIN_HEADER, _summary_rows(
            {f"{k} (all)": v for k, v in b["slices_all"]["source"].items()}
            | {f"{k} (test split)": v for k, v in (b["slices_test"] or {"source": {}})["source"].items()})),
        "",
        "Read these with care: (1) the PCB side is handed an aligned defect-free template, which makes it close to an "
        "oracle for *whether* something changed; the VLM sees one image only, so PCB rows are not a like-for-like "
        "comparison. (2) Many DeepPCB defects were added artificially by the dataset authors. (3) Image-level "
        "accuracy can be right for the wrong reason; \"grounded detection\" (defective image answered defective "
        "*with* a box on a gold box) and box recall are the honest numbers for localisation.",
        "",
        "### By defect type (all images; box recall counts boxes of that type)",
        "",
        _table(["defect type"] + MAIN_HEADER, _summary_rows(b["slices_all"]["defect_type"])),
        "",
        "### By defect size (tiny: every gold box < 1% of the image)",
        "",
        _table(["size"] + MAIN_HEADER, _summary_rows(b["slices_all"]["size"])),
        "",
        "Box recall by box size: " + ", ".join(f"{k} {_fmt(v)}" for k, v in b["slices_all"]["box_recall_by_box_size"].items()) + ".",
        "",
        "![detection by type](detection_by_type.png)",
        "",
        "## VLM runs",
        "",
    ]
    if not measured_vlm:
        reason = next(iter(p["vlm"]["not_run"].values()), "not run")
        out += [
            f"**Not run**: {reason.removeprefix('not run: ')}. No VLM weights exist on the build machine and no hosted API is reachable from it, "
            "so every VLM row below is empty on purpose (the scripted test server only proves the plumbing and is never "
            "reported). To fill them, point mmrag at any OpenAI-compatible vision endpoint and rerun:",
            "",
            f"    {p['vlm']['fill_command']}",
            "",
        ]
    else:
        out += [f"Endpoint {p['vlm']['endpoint']}, model `{p['vlm']['model']}`.", ""]
        for name, why in p["vlm"]["not_run"].items():
            out.append(f"- {name}: {why}")
        out.append("")
    cmp_rows = p["comparison"]
    header = ["run", "status", "miss", "false alarm", "accuracy", "caught", "abstain", "errors", "type acc", "loc hit", "box recall", "confident-wrong"]
    keys = ["miss_rate", "false_alarm_rate", "accuracy", "catch_rate", "abstention_rate", "error_rate", "type_accuracy", "loc_hit_rate", "box_recall", "confident_wrong"]

    def row(r: dict[str, Any]) -> list[str]:
        if r["status"] == "not run":
            return [r["run"], "not run"] + ["–"] * len(keys)
        return [r["run"], "measured"] + [_fmt(r.get(k)) for k in keys]

    by_name = {r["run"]: r for r in cmp_rows}
    out += ["### All runs side by side", "", _table(header, [row(r) for r in cmp_rows]), ""]
    crop_pairs = [(f"{v}/none", f"{v}/3x3") for v in ("structured", "uncertain")]
    out += ["### Crop vs no crop", "", _table(header, [row(by_name[n]) for pair in crop_pairs for n in pair if n in by_name]), ""]
    forced = [(f"structured/{c}", f"uncertain/{c}") for c in ("none", "3x3")]
    out += ["### Uncertain allowed vs forced answer", "", _table(header, [row(by_name[n]) for pair in forced for n in pair if n in by_name]), ""]
    for name, run in measured_vlm.items():
        sl = run["slices"]
        out += [
            f"#### {name}: by source, defect type and size",
            "",
            _table(["slice"] + MAIN_HEADER, _summary_rows(sl["source"] | sl["defect_type"] | {f"size: {k}": v for k, v in sl["size"].items()})),
            "",
        ]

    out += ["## Three instructive failures (pixel baseline)", ""]
    for i, f in enumerate(p["instructive_failures"], 1):
        out += [
            f"### {i}. {f['why_chosen']}: `{Path(f['file']).name}`" + (f" ({f['split']} split)" if f["split"] else ""),
            "",
            f"![{Path(f['file']).name}]({f['overlay']})" if f["overlay"] else "",
            "",
            f["facts"],
            "",
            f["analysis"] or "_No analysis written yet (add it to failure_notes.yaml)._",
            "",
        ]
    out += ["## Every failure", ""]
    for name, outs in p["per_image"].items():
        fails = [o for o in outs if o["status"] in ("FP", "FN", "abstain", "error") or o["localised"] is False]
        if not fails:
            continue
        out += [f"### {name}: {len(fails)} failures", ""]
        rows = []
        for o in sorted(fails, key=lambda o: (o["status"], o["file"])):
            link = p["overlays"][name].get(o["file"])
            what = o["status"] if o["status"] != "TP" else "TP, wrong place"
            rows.append([f"[{Path(o['file']).name}]({link})" if link else Path(o["file"]).name, o["split"] or "–", what,
                         ", ".join(o["gold_types"]) or "none", ", ".join(o["pred_types"]) or "–",
                         f"{sum(g['hit'] for g in o['gold_boxes'])}/{len(o['gold_boxes'])}"])
        out += [_table(["image", "split", "outcome", "gold types", "predicted types", "gold boxes hit"], rows), ""]
    return "\n".join(out) + "\n"
