"""Start and stop a `milvus-lite server` subprocess on 127.0.0.1 — the Milvus gRPC protocol, no Docker.

Used by tests and benches to exercise server mode (uri http://127.0.0.1:PORT) the way a Milvus
standalone from docker-compose.yml is used, and by hand:

    python -m rag.dev.milvus_server --data-dir /tmp/mm.db [--port 19530]   # prints the uri, Ctrl-C stops

    with MilvusLiteServer(tmp_path / "milvus.db") as server:
        client = MilvusClient(uri=server.uri)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from rag.errors import StoreUnavailableError

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A port the OS says is free right now (the server binds it a moment later; start() retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: SIGTERM the server if the test/bench process dies without tearing it down.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def wait_ready(uri: str, timeout_s: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until a Milvus at uri answers list_collections, or raise StoreUnavailableError."""
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StoreUnavailableError(f"milvus-lite server exited with code {proc.returncode} during startup")
        host, _, port = uri.split("://", 1)[-1].rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
            client = MilvusClient(uri=uri, timeout=5)
            try:
                client.list_collections()
                return
            finally:
                client.close()
        except Exception as exc:  # connection refused / not serving yet
            last_error = exc
            time.sleep(0.2)
    raise StoreUnavailableError(f"Milvus at {uri} did not answer within {timeout_s:.0f}s ({last_error})")


class MilvusLiteServer:
    """A `milvus-lite server --host 127.0.0.1 --port P --data-dir D` child process; a context manager.

    The data directory is locked by the server for its lifetime: no other process may open it
    embedded meanwhile. Clients connect to `uri`. stop() sends SIGINT (milvus-lite then drains
    requests and closes the store cleanly), escalating to SIGTERM/SIGKILL only if it hangs.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = LOCALHOST,
        port: int | None = None,
        startup_timeout_s: float = 60.0,
        max_workers: int = 10,
        log_path: Path | str | None = None,
        blas_threads: int | None = 1,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self._fixed_port = port is not None
        self.startup_timeout_s = startup_timeout_s
        self.max_workers = max_workers
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"{self.data_dir.name}.server.log"
        self.blas_threads = blas_threads
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        if self.port is None:
            raise StoreUnavailableError("milvus-lite server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.data_dir), "--host", self.host, "--port", str(port),
            "--max-workers", str(self.max_workers),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.blas_threads is not None:
            # Idle OpenBLAS threads busy-wait after each brute-force matmul and starve the client's torch
            # threads on a small machine (bench/RESULTS.md): one BLAS thread per server by default.
            env.setdefault("OPENBLAS_NUM_THREADS", str(self.blas_threads))
        return env

    def start(self) -> "MilvusLiteServer":
        if self.running:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else 3  # a picked free port can be taken in between: pick again
        for attempt in range(attempts):
            port = self.port or free_port(self.host)
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env(),
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            self.port = port
            try:
                wait_ready(self.uri, self.startup_timeout_s, self.proc)
                return self
            except StoreUnavailableError as exc:
                self.stop()
                if attempt == attempts - 1:
                    raise StoreUnavailableError(f"{exc}; last log line: {self.log_tail()!r}") from None
                self.port = None
        return self

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """Stop the server cleanly; returns its exit code (None if it was not started)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                proc.send_signal(sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return proc.returncode

    def __enter__(self) -> "MilvusLiteServer":
        return self.start()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.dev.milvus_server", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    server = MilvusLiteServer(args.data_dir, host=args.host, port=args.port).start()
    print(server.uri, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
