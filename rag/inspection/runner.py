"""Run the VLM inspector (one prompt variant x one crop spec) or the pixel baseline over images -> Answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from rag.errors import MmragError
from rag.hashing import file_sha256
from rag.inspection import pixel_baseline
from rag.inspection.answer_parser import Answer, error_answer, parse_answer
from rag.inspection.crops import aggregate, crop_tile, grid_size, make_tiles, map_to_image
from rag.inspection.prompts import SYSTEM, VARIANTS, prompt_key, prompt_text
from rag.vlm_client import VLMEndpointError, VLMResponseError

if TYPE_CHECKING:
    from rag.inspection.cache import VLMCache
    from rag.inspection.labels import ImageLabel
    from rag.vlm_client import VLMClient

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_CONSECUTIVE_FAILURES = 5  # then the endpoint is considered down, not the images


@dataclass(frozen=True)
class InspectConfig:
    prompt: str = "structured"
    crops: str = "none"

    def __post_init__(self) -> None:
        if self.prompt not in VARIANTS:
            raise MmragError(f"unknown prompt variant {self.prompt!r}: choose one of {', '.join(VARIANTS)}")
        grid_size(self.crops)  # validates

    @property
    def name(self) -> str:
        return f"{self.prompt}/{self.crops}"


def list_images(target: Path) -> list[Path]:
    """One image, or every image file directly inside a folder (sorted)."""
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise MmragError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {target}")
        return files
    if not target.exists():
        raise MmragError(f"no such image or folder: {target}")
    return [target]


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise MmragError(f"cannot read image {path}: {exc}") from None


def inspect_image(
    client: "VLMClient",
    path: Path,
    config: InspectConfig,
    cache: "VLMCache | None" = None,
) -> Answer:
    """Ask the VLM about one image (whole, or tile by tile), returning the aggregated Answer in image pixels.

    A call that yields no usable reply (transport failure, truncated or unparseable reply) becomes an error
    Answer (never a verdict) and is never cached, so the next run asks again; an endpoint that is down raises
    VLMEndpointError.
    """
    image = _open_rgb(path)
    sha = file_sha256(path)
    text_prompt, pkey = prompt_text(config.prompt), prompt_key(config.prompt)
    answers = []
    tiles = make_tiles(image.width, image.height, config.crops)
    for tile in tiles:
        crop_key = config.crops if config.crops == "none" else f"{config.crops}#{tile.index}"
        sent, scale = (image, 1.0) if config.crops == "none" else crop_tile(image, tile)
        raw = cache.get(sha, pkey, client.model, crop_key) if cache is not None else None
        if raw is not None and parse_answer(raw, config.prompt, sent.width, sent.height).error is not None:
            raw = None  # an unusable reply cached by an older version: ask again
        cached = raw is not None
        if raw is None:
            try:
                # whole image: send the file's own bytes; tiles: the (zoomed) crop
                raw = client.chat_image(path if config.crops == "none" else sent, text_prompt, system=SYSTEM)
            except VLMEndpointError:
                raise
            except VLMResponseError as exc:
                answers.append(error_answer(str(exc)))
                continue
        ans = parse_answer(raw, config.prompt, sent.width, sent.height)
        if cache is not None and not cached and ans.error is None:
            cache.put(sha, pkey, client.model, crop_key, raw)
        answers.append(map_to_image(ans, tile, scale))
    return aggregate(answers)


def run_vlm(
    client: "VLMClient",
    images: Iterable[tuple[str, Path]],
    config: InspectConfig,
    cache: "VLMCache | None" = None,
    progress: bool = True,
) -> dict[str, Answer]:
    """key -> Answer for every (key, path). Stops with VLMEndpointError when the endpoint is down."""
    items = list(images)
    out: dict[str, Answer] = {}
    failures = 0
    for key, path in tqdm(items, desc=f"VLM {config.name}", unit="img", disable=not progress, leave=False):
        ans = inspect_image(client, path, config, cache)
        out[key] = ans
        # transport failures (not unparseable replies) in a row mean the endpoint, not the image, is the problem
        failures = failures + 1 if ans.error and "VLM endpoint" in ans.error else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            raise VLMEndpointError(f"{MAX_CONSECUTIVE_FAILURES} calls in a row failed, last: {ans.error}")
    return out


def baseline_answer(path: Path, template: Path | None = None, template_from: str | None = None) -> Answer:
    """The pixel baseline's verdict; extra says which method ran and which template (and whence) it used."""
    res = pixel_baseline.analyse(path, template)
    types = tuple(dict.fromkeys(b.label for b in res.boxes))
    used = {"template": str(template), "template_from": template_from or "given"} if template is not None else {}
    return Answer(res.defective, types, tuple(res.boxes), None, None, None, {"method": res.method, **used, **res.details})


def run_baseline(labels: Iterable["ImageLabel"], data_root: Path, progress: bool = True) -> dict[str, Answer]:
    out: dict[str, Answer] = {}
    labels = list(labels)
    for lab in tqdm(labels, desc="pixel baseline", unit="img", disable=not progress, leave=False):
        template = data_root / lab.template_file if lab.template_file else None
        out[lab.file] = baseline_answer(data_root / lab.file, template, "labels" if template else None)
    return out
