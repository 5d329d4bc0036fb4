"""The path config source: a directory of Envoy v3 resources, watched for changes.

`[dynamic] path = "xds/"` points at files in YAML or JSON, each holding resources with
their `@type` (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment), either as a
DiscoveryResponse (`version_info` and `resources`), a list, or a single resource, as
Envoy's filesystem subscriptions read them. Each change of the directory is one update
(compose.py: applied whole with an ACK, or refused whole with a NACK).
"""

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import yaml

from gateway.config.files import MAX_CONFIG_BYTES, UnreadableFile, read_file
from gateway.config.watch import watch
from gateway.errors import ConfigError
from gateway.observability.tasktree import annotate
from gateway.xds.compose import Resource, XdsState, resource_of

_SUFFIXES = (".yaml", ".yml", ".json")


class XdsFileSource(XdsState):
    def __init__(self, path: str) -> None:
        super().__init__(f"path:{path}")
        self.path = path

    def _files(self) -> list[Path]:
        directory = Path(self.path)
        if not directory.is_dir():
            raise ConfigError([f"dynamic.path: {self.path} is not a directory"])
        return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES)

    @staticmethod
    def _read(file: Path) -> bytes:
        try:
            return read_file(str(file), MAX_CONFIG_BYTES)
        except UnreadableFile as exc:
            raise ConfigError([str(exc)]) from None

    def signature(self) -> bytes:
        digest = hashlib.sha256()
        for file in self._files():
            digest.update(file.name.encode() + b"\0" + self._read(file))
        return digest.digest()

    async def snapshot(self) -> list[Resource]:
        return await trio.to_thread.run_sync(self.current_resources)

    def current_resources(self) -> list[Resource]:
        found = []
        for file in self._files():
            raw = self._read(file)
            try:
                document = yaml.safe_load(raw.decode("utf-8"))
            except (UnicodeDecodeError, yaml.YAMLError) as exc:
                raise ConfigError([f"{file}: cannot read: {exc}"]) from None
            version = ""
            if isinstance(document, dict) and "resources" in document:
                version = str(document.get("version_info", ""))
                items = document["resources"]
            else:
                items = document if isinstance(document, list) else [document]
            version = version or hashlib.sha256(raw).hexdigest()[:12]
            for i, item in enumerate(items or []):
                found.append(resource_of(item, version, file.name, f"{file.name} resources[{i}]"))
        return found

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Polls the directory and calls `on_change` after each change."""
        annotate("xds file source", path=self.path)
        await watch(self._signature_now, self.signature(), on_change)

    def _signature_now(self) -> bytes | None:
        try:
            return self.signature()
        except (OSError, ConfigError):
            return None  # a directory being rewritten; look again next time
