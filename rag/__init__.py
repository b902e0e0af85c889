"""mmrag: hybrid multimodal retrieval (CLIP + caption vectors + BM25, RRF-fused) and VLM inspection."""

__version__ = "0.1.0"
