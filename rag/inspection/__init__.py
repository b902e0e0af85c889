"""VLM visual inspection: prompts, answer parsing, crop/zoom, pixel baseline, runner and CLI."""
