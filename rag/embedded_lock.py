"""Milvus Lite's folder lock: one process at a time may open an embedded store.

Milvus Lite runs one in-process server per .db folder and holds the folder's LOCK until released. This
module checks the lock before opening (so a second process gets one clear line instead of a gRPC error) and
counts this process's users of each folder so the last close releases it for other processes.
"""

from __future__ import annotations

import fcntl
import os

from rag.errors import StoreUnavailableError

_users: dict[str, int] = {}


def in_use_message(uri: str) -> str:
    return (f"Milvus Lite folder {uri} is in use by another process (one process at a time): wait for it, or serve "
            "the folder with `milvus-lite server --host 127.0.0.1 --port 19530 --data-dir FOLDER` and pass "
            "--uri http://127.0.0.1:19530")


def acquire(uri: str) -> None:
    path = os.path.abspath(uri)
    if _users.get(path, 0) == 0 and locked_elsewhere(path):
        raise StoreUnavailableError(in_use_message(uri))
    _users[path] = _users.get(path, 0) + 1


def release(uri: str) -> None:
    path = os.path.abspath(uri)
    _users[path] = _users.get(path, 1) - 1
    if _users[path] <= 0:
        _users.pop(path, None)
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


def locked_elsewhere(path: str) -> bool:
    lock_file = os.path.join(path, "LOCK")
    if not os.path.exists(lock_file):
        return False
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
