"""`mmrag inspect`: ask a VLM (or the pixel baseline) about defects; `--eval` scores everything and writes the report.

    mmrag inspect IMAGE_OR_DIR [--prompt plain|structured|uncertain] [--crops none|2x2|3x3] [--vlm-model M] [--json]
    mmrag inspect IMAGE_OR_DIR --baseline [--template T]
    mmrag inspect --eval [--labels inspection_labels.json] [--out eval/reports/inspection/]
Standalone: python -m rag.inspection.cli ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.config import Settings
from rag.errors import MmragError
from rag.inspection.crops import CROP_SPECS
from rag.inspection.prompts import VARIANTS


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", type=Path, help="an image or a folder of images (not needed with --eval)")
    parser.add_argument("--prompt", choices=VARIANTS, default=None,
                        help="plain = free text, structured = JSON (forced yes/no), uncertain = JSON that may answer "
                        "'uncertain' (default structured; with --eval: all variants)")
    parser.add_argument("--crops", choices=CROP_SPECS, default=None,
                        help="ask about overlapping tiles at full resolution and merge (default none; with --eval: none and 3x3)")
    parser.add_argument("--vlm-model", help="model name on the endpoint (overrides MMRAG_VLM_MODEL)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    parser.add_argument("--baseline", action="store_true", help="use the pixel baseline instead of a VLM (no endpoint needed)")
    parser.add_argument("--template", type=Path,
                        help="aligned defect-free template for --baseline on a PCB scan (default: the one the labels "
                        "name, or <id>_template beside <id>_test; the output names the method used)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the VLM answer cache")
    parser.add_argument("--eval", action="store_true", help="score the pixel baseline and the VLM against gold labels; write the report")
    parser.add_argument("--labels", type=Path, default=None, help="gold labels (default inspection_labels.json at the repo root)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default eval/reports/inspection/)")
    parser.add_argument("--limit", type=int, default=None, help="--eval on the first N labelled images only (quick check)")


def _configs(args: argparse.Namespace) -> tuple:
    from rag.inspection.runner import InspectConfig

    prompts = [args.prompt] if args.prompt else ["structured", "uncertain", "plain"]
    crops = [args.crops] if args.crops else ["none", "3x3"]
    # plain free text has no boxes to map back from tiles unless asked for explicitly
    return tuple(InspectConfig(p, c) for p in prompts for c in crops if not (p == "plain" and c != "none" and not args.crops))


METHOD_WORDS = {"template-diff": "template difference", "pcb-drc": "design-rule check, no template found",
                "tile-stats": "reference-free tile statistics"}


def _method(ans: dict) -> str:
    """' [pixel baseline: ...]' naming the method (and template) that produced a baseline answer."""
    extra = ans.get("extra") or {}
    if "method" not in extra:
        return ""
    words = METHOD_WORDS.get(extra["method"], extra["method"])
    if extra.get("template"):
        words += f" vs {Path(extra['template']).name} ({extra.get('template_from', 'given')})"
    if extra.get("template_skipped"):
        words += f"; {extra['template_skipped']}"
    return f" [pixel baseline: {words}]"


def _line(name: str, ans: dict) -> str:
    v = ans["verdict"]
    if v == "error":
        return f"{name}: ERROR {ans['error']}"
    conf = f" confidence {ans['confidence']:.2f}" if ans.get("confidence") is not None else ""
    if v != "defective":
        return f"{name}: {'no defect' if v == 'ok' else 'uncertain'}{conf}{_method(ans)}"
    boxes = "; ".join(
        f"{b['label']} [{', '.join(f'{c:.0f}' for c in b['bbox_xyxy'])}]{' (grid cell)' if b.get('from_cell') else ''}"
        for b in ans["boxes"]
    )
    return (f"{name}: DEFECTIVE ({', '.join(ans['types']) or 'type not given'}){conf}" + (f" at {boxes}" if boxes else "")
            + _method(ans))


def run_inspect(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point used by `mmrag inspect` and by main() below. User errors raise MmragError (one line)."""
    from rag.inspection.labels import DEFAULT_LABELS

    if args.vlm_model:
        settings = settings.with_(vlm_model=args.vlm_model)
    labels_path = args.labels or DEFAULT_LABELS
    if args.eval:
        from rag.inspection.report import DEFAULT_OUT, run_eval

        out = args.out or DEFAULT_OUT
        payload = run_eval(labels_path, out, settings, _configs(args), limit=args.limit, use_cache=not args.no_cache)
        def r(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        for part in ("all", "test_split"):  # test split only for the labels the thresholds were fitted on
            t = payload["baseline"][part]
            if t is None:
                continue
            print(f"pixel baseline ({part.replace('_', ' ')}, {t['n']} images): miss rate {r(t['miss_rate'])}, "
                  f"false-alarm rate {r(t['false_alarm_rate'])}, box recall {r(t['box_recall'])}")
        for row in payload["comparison"][1:]:
            if row["status"] == "not run":
                print(f"{row['run']}: {payload['vlm']['not_run'].get(row['run'], 'not run')}")
            else:
                print(f"{row['run']}: miss rate {r(row['miss_rate'])}, false-alarm rate {r(row['false_alarm_rate'])}, "
                      f"abstention rate {r(row['abstention_rate'])}, errors {r(row['error_rate'])}")
        print(f"report: {out / 'report.md'}")
        return 2 if payload["vlm"]["error"] else 0

    if args.target is None:
        raise MmragError("give an image or folder to inspect, or --eval")
    from rag.inspection.runner import InspectConfig, baseline_answer, inspect_image, list_images

    images = list_images(args.target)
    results = {}
    if args.baseline:
        from rag.inspection.templates import find_template

        for path in images:  # a PCB scan uses its template when one is known, and says which method ran
            template, origin = (args.template, "--template") if args.template else find_template(path, labels_path)
            try:
                answer = baseline_answer(path, template, origin)
            except MmragError as exc:  # a found template that does not fit: say so, check the design rules
                if args.template or template is None:
                    raise
                answer = baseline_answer(path)
                answer.extra["template_skipped"] = f"{template.name} ({origin}) not used: {exc}"
            results[str(path)] = answer.to_dict()
    else:
        from rag.inspection.cache import VLMCache
        from rag.vlm_client import VLMClient

        config = InspectConfig(args.prompt or "structured", args.crops or "none")
        client = VLMClient.from_settings(settings)
        cache = None if args.no_cache else VLMCache(settings.data_dir / "vlm_cache.sqlite")
        try:
            for path in images:
                results[str(path)] = inspect_image(client, path, config, cache).to_dict()
                if not args.json:
                    print(_line(str(path), results[str(path)]), flush=True)
        finally:
            if cache is not None:
                cache.close()
        if args.json:
            print(json.dumps(results, indent=1))
        return 0 if all(r["verdict"] != "error" for r in results.values()) else 1
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for name, ans in results.items():
            print(_line(name, ans))
    return 0
