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
