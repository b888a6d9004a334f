"""The topic metadata store: which topics exist, their partition counts, ids and config overrides.

File format: `<data dir>/topics.json`, UTF-8 JSON, replaced atomically (write temp file, fsync,
rename, fsync the directory) on every change, so a crash leaves either the old or the new file::

    {"version": 1,
     "topics": {"<name>": {"partitions": 3,
                           "topic_id": "8c6f1d2e-...",      # uuid4, stable for the topic's life
                           "configs": {"retention.ms": "1000"}}}}

Owner: the broker (one Trio task at a time touches it; no locking). The partition logs on disk are
the truth for data; this file is the truth for names, ids and overrides. `reconcile(logs)` on start
adopts partition directories that exist on disk but are missing here (a crash between creating the
log directory and saving this file) and reports topics whose directories are missing so the broker
recreates them empty. Deleting a topic therefore renames its directories to delete-marked names
(storage.manager, tagged with the topic id) before this file drops the topic: a crash in between
leaves the topic here with marked directories, and start-up finishes the deletion (the storage
manager's `resumed_deletes`) before reconciling, so the topic neither comes back empty nor with
fewer partitions.

A file that cannot be read as this format (damaged by hand or by the disk, not by a crash) raises
`TopicsFileError`: the broker refuses to start rather than guess, since starting without the file
would adopt the topic directories under new ids and without their config overrides.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs

from ringlog.storage.checkpoint import atomic_write

FILE_NAME = "topics.json"
FORMAT_VERSION = 1

MAX_TOPIC_NAME_LENGTH = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")


def topic_name_error(name: str | None) -> str | None:
    """Why `name` is not a legal Kafka topic name, or None when it is."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return f"topic name cannot be {name!r}"
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        return f"topic name is {len(name)} characters, the limit is {MAX_TOPIC_NAME_LENGTH}"
    if not _LEGAL.match(name):
        return f"topic name {name!r} has characters outside [a-zA-Z0-9._-]"
    return None


class TopicsFileError(Exception):
    """topics.json exists but is not a topics file: `path`, `problem` (what is wrong), and the
    message says what to do."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}; restore the file from a backup, or move it aside to start with the "
            f"topic directories found in the data dir (adopted with new topic ids and without their "
            f"config overrides)"
        )


def is_internal(name: str) -> bool:
    return name.startswith("__")


@attrs.frozen
class TopicInfo:
    name: str
    partitions: int
    topic_id: uuid.UUID
    configs: Mapping[str, str] = attrs.field(factory=dict, converter=lambda m: dict(m))

    @property
    def internal(self) -> bool:
        return is_internal(self.name)

    def to_json(self) -> dict:
        return {"partitions": self.partitions, "topic_id": str(self.topic_id), "configs": dict(self.configs)}

    @classmethod
    def from_json(cls, name: str, data: Mapping) -> TopicInfo:
        """Raises ValueError naming the field that is wrong, KeyError for a missing one."""
        try:
            partitions = int(data["partitions"])
        except (TypeError, ValueError):
            raise ValueError(f"partitions {data['partitions']!r} is not a number") from None
        if partitions < 1:
            raise ValueError(f"partitions {partitions} must be at least 1")
        try:
            topic_id = uuid.UUID(str(data["topic_id"]))
        except ValueError:
            raise ValueError(f"topic_id {data['topic_id']!r} is not a UUID") from None
        configs = data.get("configs") or {}
        if not isinstance(configs, Mapping):
            raise ValueError("configs is not an object")
        return cls(
            name=name,
            partitions=partitions,
            topic_id=topic_id,
            configs={str(k): str(v) for k, v in configs.items()},
        )


class TopicStore:
    """Topics by name, persisted to `<data_dir>/topics.json` on every change."""

    def __init__(self, data_dir: str | os.PathLike, topics: Iterable[TopicInfo] = ()) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._topics: dict[str, TopicInfo] = {t.name: t for t in topics}

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> TopicStore:
        path = Path(data_dir) / FILE_NAME
        if not path.exists():
            return cls(data_dir)
        data = path.read_bytes()
        try:
            raw = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TopicsFileError(path, f"not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            what = "empty, no JSON in it" if not data.strip() else f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            raise TopicsFileError(path, what) from None
        if not isinstance(raw, dict):
            raise TopicsFileError(path, "not a JSON object")
        if raw.get("version") != FORMAT_VERSION:
            raise TopicsFileError(path, f"format version {raw.get('version')!r}, this broker reads version "
                                        f"{FORMAT_VERSION}")
        topics = raw.get("topics", {})
        if not isinstance(topics, dict):
            raise TopicsFileError(path, "its topics field is not an object")
        infos = []
        for name, entry in topics.items():
            if not isinstance(entry, dict):
                raise TopicsFileError(path, f"topic {name!r} is not an object")
            try:
                infos.append(TopicInfo.from_json(name, entry))
            except KeyError as exc:
                raise TopicsFileError(path, f"topic {name!r} has no {exc.args[0]} field") from None
            except ValueError as exc:
                raise TopicsFileError(path, f"topic {name!r}: {exc}") from None
        return cls(data_dir, infos)

    def save(self) -> None:
        self.write(self.encode())

    def encode(self) -> bytes:
        """The file's content for the topics as they are now."""
        data = {
            "version": FORMAT_VERSION,
            "topics": {name: t.to_json() for name, t in sorted(self._topics.items())},
        }
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()

    def write(self, content: bytes) -> None:
        """Replace the file with `content` (from encode()); touches no in-memory state, so it may
        run in a worker thread while the owner goes on."""
        atomic_write(self.path, content)

    # --- queries -------------------------------------------------------------------------------

    def get(self, name: str) -> TopicInfo | None:
        return self._topics.get(name)

    def by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        for t in self._topics.values():
            if t.topic_id == topic_id:
                return t
        return None

    def names(self) -> list[str]:
        return sorted(self._topics)

    def __contains__(self, name: object) -> bool:
        return name in self._topics

    def __iter__(self) -> Iterator[TopicInfo]:
        return iter(sorted(self._topics.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._topics)

    # --- changes (each one persisted) ----------------------------------------------------------

    def add(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str] | None = None,
        *,
        topic_id: uuid.UUID | None = None,
        save: bool = True,
    ) -> TopicInfo:
        """Add a topic; save=False leaves persisting it to the caller (encode() + write())."""
        error = topic_name_error(name)
        if error:
            raise ValueError(error)
        if name in self._topics:
            raise KeyError(f"topic {name!r} already exists")
        if partitions < 1:
            raise ValueError(f"partition count {partitions} must be at least 1")
        info = TopicInfo(name=name, partitions=partitions, topic_id=topic_id or uuid.uuid4(), configs=configs or {})
        self._topics[name] = info
        if not save:
            return info
        try:
            self.save()
        except BaseException:
            del self._topics[name]  # memory says what the file says
            raise
        return info

    def remove(self, name: str, *, save: bool = True) -> TopicInfo:
        """Forget a topic; save=False leaves persisting it to the caller (encode() + write())."""
        info = self._topics.pop(name)
        if save:
            self.save()
        return info

    def put(self, info: TopicInfo) -> None:
        """Put back a topic as it was (undoing a change whose save failed); memory only."""
        self._topics[info.name] = info

    def set_partitions(self, name: str, partitions: int, *, save: bool = True) -> TopicInfo:
        return self._replace(attrs.evolve(self._topics[name], partitions=partitions), save=save)

    def set_configs(self, name: str, configs: Mapping[str, str], *, save: bool = True) -> TopicInfo:
        return self._replace(attrs.evolve(self._topics[name], configs=dict(configs)), save=save)

    def _replace(self, info: TopicInfo, *, save: bool) -> TopicInfo:
        """Put `info` in place of the topic of its name; with save, memory goes back to what the
        file says when writing it fails."""
        before = self._topics[info.name]
        self._topics[info.name] = info
        if save:
            try:
                self.save()
            except BaseException:
                self._topics[info.name] = before
                raise
        return info

    # --- start-up ------------------------------------------------------------------------------

    def reconcile(self, on_disk: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        """Match the store with the (topic, partition) logs found on disk.

        Topics present on disk but unknown here are adopted with a fresh id and as many partitions
        as the highest partition number found + 1. Returns the (topic, partition) pairs this store
        names that have no log on disk: the caller creates them empty.
        """
        found: dict[str, set[int]] = {}
        for topic, partition in on_disk:
            found.setdefault(topic, set()).add(partition)
        changed = False
        for topic, parts in found.items():
            info = self._topics.get(topic)
            if info is None:
                if topic_name_error(topic):
                    continue
                self._topics[topic] = TopicInfo(name=topic, partitions=max(parts) + 1, topic_id=uuid.uuid4())
                changed = True
            elif max(parts) + 1 > info.partitions:
                self._topics[topic] = attrs.evolve(info, partitions=max(parts) + 1)
                changed = True
        if changed:
            self.save()
        missing = []
        for info in self._topics.values():
            have = found.get(info.name, set())
            missing.extend((info.name, p) for p in range(info.partitions) if p not in have)
        return missing
