"""Build the real CLIP ViT-B/32 architecture with random weights and the real CLIP tokenizer.

No pretrained CLIP can be downloaded on the build machines. This writes an ordinary Hugging Face
model folder that `ClipEmbedding.from_pretrained(folder)` loads exactly like a downloaded model,
so the loading code, shapes, FLOPs and the store's dimensions are real; only the weights are not.
Never report retrieval quality from it.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level BPE alphabet.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_clip_tokenizer_files(out_dir: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt from OpenAI's bpe_simple_vocab_16e6 (as openai/clip's SimpleTokenizer does)."""
    vocab_gz = resources.files("rag.dev") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(vocab_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [token + "</w>" for token in alphabet] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_random_clip(out_dir: Path, *, seed: int = 0) -> Path:
    """Save CLIPModel(CLIPConfig()) (ViT-B/32, 512-d) with random weights plus its processor to out_dir."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and (out_dir / "model.safetensors").exists():
        return out_dir
    torch.manual_seed(seed)
    vocab_path, merges_path = write_clip_tokenizer_files(out_dir)
    tokenizer = CLIPTokenizer(str(vocab_path), str(merges_path))
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer)
    CLIPModel(CLIPConfig()).save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    import sys

    print(build_random_clip(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/random-clip-vit-b32")))
