"""Indexing pipeline: caption sources (metadata sidecar, OCR, VLM), caption cache, and the index run."""
