"""`mmrag app`: start the Streamlit app on 127.0.0.1, handing it the settings through MMRAG_* variables."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from rag.config import Settings
from rag.errors import MmragError

APP_SCRIPT = Path(__file__).resolve().parents[1] / "app_streamlit.py"
DEFAULT_PORT = 8501
DEFAULT_MAX_UPLOAD_MB = 10


def settings_env(settings: Settings) -> dict[str, str]:
    """The MMRAG_* variables that make Settings.from_env() in the app process equal these settings."""
    env = {
        "MMRAG_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "MMRAG_COLLECTION_PREFIX": settings.collection_prefix,
        "MMRAG_CLIP_MODEL": settings.clip_model or "none",
        "MMRAG_TEXT_MODEL": settings.text_model,
        "MMRAG_VLM_TIMEOUT_S": str(settings.vlm_timeout_s),
        "MMRAG_FUSION_WEIGHTS": ",".join(f"{k}={v:g}" for k, v in settings.fusion_weights.items()),
        "MMRAG_FUSION": settings.fusion,
        "MMRAG_QUERY_THREADS": str(settings.query_threads),
        "MMRAG_MATCH_THRESHOLDS": str(Path(settings.match_thresholds).resolve()),
        "MMRAG_ASK_IMAGES": str(settings.ask_images),
    }
    optional = {
        "MMRAG_URI": settings.uri,
        "MMRAG_TOKEN": settings.token,
        "MMRAG_VLM_BASE_URL": settings.vlm_base_url,
        "MMRAG_VLM_MODEL": settings.vlm_model,
        "MMRAG_VLM_API_KEY": settings.vlm_api_key,
    }
    env.update({k: str(v) for k, v in optional.items() if v})
    return env


def add_app_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `mmrag app` (settings flags such as --data-dir/--uri come from the shared CLI parser)."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    parser.add_argument(
        "--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, help="largest query image upload in MB (default 10)"
    )
    parser.add_argument("--open-browser", action="store_true", help="open a browser tab (default: headless)")


def streamlit_command(port: int, *, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB, headless: bool = True) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        "--server.maxUploadSize", str(max_upload_mb),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def run_app(args: argparse.Namespace, settings: Settings) -> int:
    """Run the app in the foreground until Ctrl-C; return Streamlit's exit status."""
    if not APP_SCRIPT.is_file():
        raise MmragError(f"app script not found: {APP_SCRIPT}")
    port = int(getattr(args, "port", DEFAULT_PORT) or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise MmragError(f"--port must be 1..65535, got {port}")
    max_mb = int(getattr(args, "max_upload_mb", DEFAULT_MAX_UPLOAD_MB) or DEFAULT_MAX_UPLOAD_MB)
    explicit_models = getattr(args, "clip_model", None) is not None or getattr(args, "text_model", None) is not None
    env = {
        **os.environ,
        **settings_env(settings),
        "MMRAG_MAX_UPLOAD_MB": str(max_mb),
        # like `mmrag search`: the index's own models unless --clip-model/--text-model was given
        "MMRAG_MODELS_FROM_INDEX": "0" if explicit_models else "1",
    }
    command = streamlit_command(port, max_upload_mb=max_mb, headless=not getattr(args, "open_browser", False))
    print(f"mmrag app: http://127.0.0.1:{port}  (store {settings.store_uri}; Ctrl-C stops)", file=sys.stderr)
    process = subprocess.Popen(command, env=env, cwd=str(APP_SCRIPT.parent))
    # A SIGTERM to `mmrag app` (service managers, `timeout`) is passed on, so Streamlit closes the store cleanly.
    previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached Streamlit too; give it time to close the store cleanly
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
