"""A real Milvus standalone (the PyPI `milvus` 2.3.x package: the C++ server, no Docker) for tests and benches.

That server listens on every interface and cannot be told otherwise, so it only ever starts inside a network
namespace of our own whose only interface is loopback. Nothing here creates a namespace implicitly except
run_in_netns; MilvusStandalone.start() refuses to run anywhere else.

    unshare -n bash -c 'ip link set lo up; exec python -m rag.dev.milvus_standalone --data-dir /tmp/m --port 19530'
    # prints "READY http://127.0.0.1:19530" once it answers; SIGTERM/SIGINT stop it cleanly

    ok, reason = netns_available()
    result = run_in_netns([sys.executable, "scenario.py"], timeout=300)   # a fresh namespace per call
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from rag.errors import StoreUnavailableError

LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 19530
# Bring loopback up, then exec the command given as positional args ("$@" keeps every argument intact).
_NETNS_SCRIPT = 'ip link set lo up && exec "$@"'


def netns_interfaces() -> list[str]:
    """Network interfaces of this process's namespace (/proc/self/net/dev is per-namespace; /sys/class/net is not)."""
    try:
        lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def isolation_problem() -> str | None:
    """None when this process sits in a namespace whose only interface is lo, else why not."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    names = netns_interfaces()
    others = [n for n in names if n != "lo"]
    if not names or others:
        return f"not inside a private network namespace (interfaces: {', '.join(names) or 'unknown'})"
    return None


def netns_available() -> tuple[bool, str]:
    """(True, "") when run_in_netns can make a namespace here, else (False, the reason)."""
    if not sys.platform.startswith("linux"):
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "making a network namespace needs root (unshare -n)"
    for tool in ("unshare", "ip", "bash"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` is not installed"
    try:
        probe = subprocess.run(["unshare", "-n", "bash", "-c", _NETNS_SCRIPT, "bash", "true"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return False, f"unshare -n failed: {(probe.stderr.strip().splitlines() or ['exit %d' % probe.returncode])[-1]}"
    return True, ""


def run_in_netns(cmd: list[str], *, timeout: float | None = None, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run cmd in a fresh network namespace with only lo (up); returns its CompletedProcess (text output).

    On timeout the whole process group is killed (the servers it started die with it) and TimeoutExpired
    is raised with whatever output there was.
    """
    argv = ["unshare", "-n", "bash", "-c", _NETNS_SCRIPT, "bash", *map(str, cmd)]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(argv, timeout or 0, output=out, stderr=err) from None
    finally:
        if proc.poll() is None:
            _kill_group(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def die_with_parent() -> None:
    # Linux: SIGKILL the server if its owner dies without stopping it (a server must never outlive its test).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _reusable_listener(port: int) -> socket.socket | None:
    # SO_REUSEADDR as the Go server itself binds: a port whose old connections sit in TIME_WAIT after a kill is
    # free to reuse; one another process listens on is not.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCALHOST, port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


class MilvusStandalone:
    """`milvus run standalone` (PyPI `milvus` 2.3.x) on 127.0.0.1:port with its data under data_dir.

    bin_cache: where the packaged binaries (~450 MB) are unpacked once and shared between data dirs; default
    data_dir itself, as the package does. The same data_dir restarts with all flushed data.
    """

    def __init__(self, data_dir: Path | str, *, port: int = DEFAULT_PORT, bin_cache: Path | str | None = None,
                 startup_timeout_s: float = 120.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.bin_cache = Path(bin_cache).resolve() if bin_cache else None
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self._logs: list = []

    @property
    def uri(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _prepare_binaries(self) -> Path:
        from milvus import _initialize_data_files  # the package's own unpacker (md5-checked, idempotent)

        if self.bin_cache is None:
            _initialize_data_files(str(self.data_dir))
            return self.data_dir / "bin"
        self.bin_cache.mkdir(parents=True, exist_ok=True)
        with open(self.bin_cache / ".lock", "w") as lock:  # two test processes may unpack at once
            fcntl.flock(lock, fcntl.LOCK_EX)
            _initialize_data_files(str(self.bin_cache))
        link = self.data_dir / "bin"
        if not link.exists():
            link.symlink_to(self.bin_cache / "bin", target_is_directory=True)
        return link

    def start(self) -> "MilvusStandalone":
        if self.running:
            return self
        problem = isolation_problem()
        if problem:  # the server binds 0.0.0.0: never on a shared network
            raise StoreUnavailableError(f"refusing to start Milvus standalone: {problem}; use run_in_netns or unshare -n")
        from milvus import MilvusServerConfig

        class Config(MilvusServerConfig):
            def try_bind_port(self, port: int) -> socket.socket | None:  # the package's check lacks SO_REUSEADDR
                return _reusable_listener(port)

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # proxy_port given as a config kwarg: the package then fails on a taken port instead of moving to the next.
        config = Config(data_dir=str(self.data_dir), proxy_port=self.port)
        try:
            config.resolve()  # writes DATA/configs/milvus.yaml with its data paths and the other internal ports
        except RuntimeError as exc:
            raise StoreUnavailableError(f"cannot configure Milvus standalone on port {self.port}: {exc}") from None
        metrics_port, sock = config.resolve_port(9091)
        sock.close()
        bin_dir = self._prepare_binaries()
        env = dict(os.environ, DEPLOY_MODE="STANDALONE", METRICS_PORT=str(metrics_port),
                   MILVUS_RUN_DIR=str(self.data_dir / "run"),
                   LD_LIBRARY_PATH=":".join(filter(None, [str(bin_dir), os.environ.get("LD_LIBRARY_PATH", "")])))
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        self._logs = [open(logs / "milvus-stdout.log", "ab"), open(logs / "milvus-stderr.log", "ab")]
        # cwd = data dir: the server reads configs/milvus.yaml relative to it.
        self.proc = subprocess.Popen([str(bin_dir / "milvus"), "run", "standalone"], cwd=self.data_dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._logs[0], stderr=self._logs[1],
                                     preexec_fn=die_with_parent)
        try:
            self._wait_ready(metrics_port)
        except BaseException:
            self.stop(timeout_s=5)
            raise
        return self

    def _wait_ready(self, metrics_port: int) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + self.startup_timeout_s
        last: object = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise StoreUnavailableError(f"Milvus standalone exited during startup (code {self.proc and self.proc.returncode}); "
                                            f"see {self.data_dir / 'logs'}")
            try:
                with urllib.request.urlopen(f"http://{LOCALHOST}:{metrics_port}/healthz", timeout=2) as resp:
                    healthy = b"OK" in resp.read()
                if healthy and _port_open(self.port):
                    client = MilvusClient(uri=self.uri, timeout=5)
                    try:
                        client.list_collections()
                        return
                    finally:
                        client.close()
            except Exception as exc:  # not serving yet
                last = exc
            time.sleep(0.3)
        raise StoreUnavailableError(f"Milvus standalone did not answer within {self.startup_timeout_s:.0f}s ({last})")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait for a clean shutdown (SIGKILL after timeout_s); returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for handle in self._logs:
            handle.close()
        self._logs = []
        return proc.returncode if proc else None

    def kill(self) -> None:
        """SIGKILL, no shutdown: what a crash or an OOM kill looks like to the data on disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stop()

    def __enter__(self) -> "MilvusStandalone":
        return self.start()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.dev.milvus_standalone", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--bin-cache", type=Path, default=None,
                        help="unpack the server binaries here once and share them between data dirs")
    args = parser.parse_args(argv)
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = MilvusStandalone(args.data_dir, port=args.port, bin_cache=args.bin_cache)
    try:
        server.start()
    except StoreUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"READY {server.uri}", flush=True)
    try:
        while server.running and not stopping:
            time.sleep(0.2)
        crashed = not server.running and not stopping
    finally:
        code = server.stop()
    if crashed:
        print(f"error: Milvus standalone exited unexpectedly (code {code}); see {args.data_dir / 'logs'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
