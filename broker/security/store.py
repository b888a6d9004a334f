"""The security state kept in the data dir: `security/credentials.json`, `security/acls.json` and
`security/quotas.json` (the client quotas, broker.quotas).

Each file is rewritten whole, atomically (a temporary file, fsync, rename, fsync of the
directory), so a crash leaves the old or the new version, never half of one. The broker writes
them in a worker thread; `ringlog users` and `ringlog acls` write them offline, before the first
start or while the broker is stopped (as Kafka's `kafka-storage format --add-scram` does).
"""
from __future__ import annotations

import json
import os
from typing import Any

from .scram import MECHANISMS, ScramCredential, check_plain, make_credential, make_plain

SUBDIR = "security"
CREDENTIALS = "credentials.json"
ACLS = "acls.json"
QUOTAS = "quotas.json"
USER_MECHANISMS = (*MECHANISMS, "PLAIN")


class StoreError(ValueError):
    """A security file that cannot be read: one line naming it."""


def path(data_dir: str, name: str) -> str:
    return os.path.join(data_dir, SUBDIR, name)


def read_json(data_dir: str, name: str, default: Any) -> Any:
    p = path(data_dir, name)
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise StoreError(f"{p}: cannot be read: {exc}") from None


def write_json(data_dir: str, name: str, value: Any) -> None:
    """Atomic replace; blocking (fsyncs): a worker thread's job in the broker."""
    directory = os.path.join(data_dir, SUBDIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    final = os.path.join(directory, name)
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Credentials:
    """user -> mechanism -> stored credential (SCRAM: salt, iterations, StoredKey, ServerKey;
    PLAIN: a salted PBKDF2 hash). Never a password."""

    def __init__(self, users: dict[str, dict[str, Any]] | None = None) -> None:
        self.users: dict[str, dict[str, Any]] = users or {}

    @classmethod
    def load(cls, data_dir: str) -> Credentials:
        data = read_json(data_dir, CREDENTIALS, {"users": {}})
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise StoreError(f"{path(data_dir, CREDENTIALS)}: no \"users\" table")
        return cls(users)

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "users": {u: dict(m) for u, m in self.users.items()}}

    def save(self, data_dir: str, snapshot: dict[str, Any] | None = None) -> None:
        write_json(data_dir, CREDENTIALS, snapshot if snapshot is not None else self.snapshot())

    def scram(self, user: str, mechanism: str) -> ScramCredential | None:
        entry = self.users.get(user, {}).get(mechanism)
        if entry is None:
            return None
        try:
            return ScramCredential.from_json(entry)
        except (KeyError, ValueError, TypeError):
            return None

    def plain(self, user: str) -> dict[str, Any] | None:
        return self.users.get(user, {}).get("PLAIN")

    def check_plain(self, user: str, password: str) -> bool:
        stored = self.plain(user)
        if stored is None:
            return False
        try:
            return check_plain(stored, password)
        except (KeyError, ValueError, TypeError):
            return False

    def set(self, user: str, mechanism: str, entry: dict[str, Any]) -> None:
        self.users.setdefault(user, {})[mechanism] = entry

    def add_password(self, user: str, mechanism: str, password: str, iterations: int) -> None:
        """CPU work (PBKDF2)."""
        if mechanism == "PLAIN":
            self.set(user, mechanism, make_plain(password, iterations))
        else:
            self.set(user, mechanism, make_credential(mechanism, password, iterations).to_json())

    def delete(self, user: str, mechanism: str | None = None) -> bool:
        """Remove one mechanism of a user (all of them when None); False when there was none."""
        mechanisms = self.users.get(user)
        if mechanisms is None:
            return False
        if mechanism is None:
            del self.users[user]
            return True
        if mechanisms.pop(mechanism, None) is None:
            return False
        if not mechanisms:
            del self.users[user]
        return True

    def mechanisms(self, user: str) -> dict[str, int]:
        """mechanism -> iterations, for describing (never the keys)."""
        return {m: int(e.get("iterations", 0)) for m, e in sorted(self.users.get(user, {}).items())}
