"""CLIP-family (CLIP, SigLIP) image+text embedder behind LlamaIndex's MultiModalEmbedding interface.

llama-index-embeddings-clip needs OpenAI's git-only `clip` package and torchvision (CUDA-linked here),
so this implements the same interface on transformers' CLIPModel/SiglipModel instead.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageType
from PIL import Image
from pydantic import PrivateAttr

from rag.errors import ModelUnavailableError
from rag.hub import load_from_hub_or_folder
from rag.images import BadImageError, check_shape, decode_image, load_image

ImageInput = ImageType | Image.Image | Path


def _as_pil(image: ImageInput) -> Image.Image:
    """RGB PIL image through the same checks as catalog files (size, aspect ratio); BadImageError otherwise."""
    if isinstance(image, Image.Image):
        check_shape(*image.size)
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray, io.IOBase)):
        return decode_image(image)[0]
    try:
        return load_image(image)
    except BadImageError as exc:
        raise BadImageError(f"{Path(image).name}: {exc}") from exc


def _short_side(processor: Any) -> int | None:
    """The side CLIP preprocessing scales the short side to (None: it resizes to a fixed square)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    side = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    return int(side) if side else None


@dataclass
class ImageBatchResult:
    """One vector per input image, None where that image failed; errors maps input index -> one-line reason."""

    vectors: list[Embedding | None]
    errors: dict[int, str] = field(default_factory=dict)


def _features(output: Any) -> Any:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding; 4.x a tensor.
    return output if hasattr(output, "norm") else output.pooler_output


def _unreachable_message(model_id: str, exc: Exception) -> str:
    return (
        f"cannot load CLIP model {model_id!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). "
        "No weights are cached here and the model hub is unreachable: pass --clip-model /path/to/hf-folder "
        "(a CLIP or SigLIP folder saved with save_pretrained or `hf download`), or --clip-model none to index caption-side only."
    )


def _load_pretrained(source: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoProcessor

    def load(local_only: bool) -> tuple[Any, Any]:
        model = AutoModel.from_pretrained(source, local_files_only=local_only)
        return model, AutoProcessor.from_pretrained(source, local_files_only=local_only)

    return load_from_hub_or_folder(source, load)


class ClipEmbedding(MultiModalEmbedding):
    """L2-normalised image and text vectors from one CLIP/SigLIP checkpoint (hub id or local folder)."""

    model_id: str = "openai/clip-vit-base-patch32"
    device: str = "cpu"
    _model: Any = PrivateAttr()
    _processor: Any = PrivateAttr()
    _dim: int = PrivateAttr()
    _text_kwargs: dict = PrivateAttr()

    @classmethod
    def from_pretrained(cls, model_id: str, *, device: str = "cpu", batch_size: int = 32, dtype: str = "") -> "ClipEmbedding":
        import torch  # import early so a broken torch fails here, not mid-index
        from transformers.utils import logging as hf_logging

        local = Path(model_id).expanduser()
        source = str(local) if local.exists() else model_id
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the torchvision-less PIL image-processor fallback warns on every load
        hf_logging.disable_progress_bar()  # per-load "Loading weights" bars; our own progress is tqdm
        try:
            model, processor = _load_pretrained(source)
            model = model.to(device).eval()
            if _use_bf16(device, dtype):
                model = model.to(torch.bfloat16)  # 4.1x image throughput on AMX CPUs (bench/RESULTS.md section 1)
        except Exception as exc:  # OSError, HTTP errors, ValueError for non-model folders
            raise ModelUnavailableError(_unreachable_message(model_id, exc)) from exc
        finally:
            hf_logging.set_verbosity(previous)
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise ModelUnavailableError(f"{model_id!r} is a {type(model).__name__}, not a CLIP/SigLIP dual encoder")
        embedder = cls(model_name=model_id, model_id=model_id, device=device, embed_batch_size=batch_size)
        embedder._model = model
        embedder._processor = processor
        config = model.config
        embedder._dim = int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)
        is_siglip = "siglip" in config.model_type
        embedder._text_kwargs = {"padding": "max_length", "max_length": 64} if is_siglip else {"padding": True}
        return embedder

    @classmethod
    def class_name(cls) -> str:
        return "ClipEmbedding"

    @property
    def dim(self) -> int:
        return self._dim

    def _encode_texts(self, texts: Sequence[str]) -> list[Embedding]:
        import torch

        with torch.inference_mode():
            inputs = self._processor(text=list(texts), return_tensors="pt", truncation=True, **self._text_kwargs)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            features = _features(self._model.get_text_features(**inputs))
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().tolist()

    def _checked_pil(self, image: ImageInput) -> Image.Image:
        pil = _as_pil(image)
        side = _short_side(self._processor)
        if side:  # the size the processor's resize produces before its centre crop
            check_shape(*pil.size, short_side=side)
        return pil

    def _encode_images(self, images: Sequence[ImageInput]) -> list[Embedding]:
        import torch

        pil_images = [self._checked_pil(image) for image in images]
        with torch.inference_mode():
            inputs = self._processor(images=pil_images, return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.device, dtype=self._model.dtype)
            features = _features(self._model.get_image_features(pixel_values=pixels))
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().tolist()

    def _batched(self, items: Sequence[Any], encode: Any) -> list[Embedding]:
        out: list[Embedding] = []
        for start in range(0, len(items), self.embed_batch_size):
            out.extend(encode(items[start : start + self.embed_batch_size]))
        return out

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode_texts([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode_texts([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._batched(texts, self._encode_texts)

    def _get_image_embedding(self, img_file_path: ImageInput) -> Embedding:
        return self._encode_images([img_file_path])[0]

    async def _aget_image_embedding(self, img_file_path: ImageInput) -> Embedding:
        return self._get_image_embedding(img_file_path)

    def _get_image_embeddings(self, img_file_paths: list[ImageInput]) -> list[Embedding]:
        return self._batched(img_file_paths, self._encode_images)

    def embed_images_isolated(self, images: Sequence[ImageInput]) -> ImageBatchResult:
        """Embed in batches; images that fail are reported by index and never cost the rest of their batch.

        Each image is checked first (a known-bad one is left out before batching); if a batch still fails
        (out of memory, a decoder error), its images are embedded one by one.
        """
        result = ImageBatchResult([None] * len(images))
        ready: list[tuple[int, Image.Image]] = []
        for i, image in enumerate(images):
            try:
                ready.append((i, self._checked_pil(image)))
            except (BadImageError, OSError, ValueError) as exc:
                result.errors[i] = str(exc) if isinstance(exc, BadImageError) else f"cannot embed: {exc}"
        for start in range(0, len(ready), self.embed_batch_size):
            chunk = ready[start : start + self.embed_batch_size]
            try:
                vectors = self._encode_images([pil for _, pil in chunk])
            except (MemoryError, RuntimeError, ValueError, OSError):
                vectors = [self._embed_one(i, pil, result.errors) for i, pil in chunk]
            for (i, _), vector in zip(chunk, vectors):
                result.vectors[i] = vector
        return result

    def _embed_one(self, index: int, image: Image.Image, errors: dict[int, str]) -> Embedding | None:
        try:
            return self._encode_images([image])[0]
        except (MemoryError, RuntimeError, ValueError, OSError) as exc:
            errors[index] = f"CLIP embedding failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
            return None


def _use_bf16(device: str, forced: str = "") -> bool:
    """bf16 weights where the CPU multiplies bf16 natively (AMX / AVX512-BF16); dtype fp32|bf16 (MMRAG_CLIP_DTYPE) forces."""
    import torch

    forced = forced.lower()
    if forced in ("fp32", "float32", "bf16", "bfloat16"):
        return forced.startswith("bf")
    return device == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def load_clip(model_id: str | None, *, batch_size: int = 32, dtype: str = "") -> ClipEmbedding | None:
    """None/'none' → no CLIP side; otherwise load or raise ModelUnavailableError with one readable line."""
    if model_id is None or model_id.lower() == "none":
        return None
    logging.getLogger(__name__).info("loading CLIP model %s", model_id)
    return ClipEmbedding.from_pretrained(model_id, batch_size=batch_size, dtype=dtype)
