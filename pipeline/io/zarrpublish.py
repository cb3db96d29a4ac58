"""Publishing a Zarr group output: renamed into place on disk, root metadata last on a bucket.

An OME-Zarr output is a tree of objects, and an object store has no rename: so on a bucket the
tree is written in place, straight from the work arrays (no local copy), while the group's root
metadata (``zarr.json`` for Zarr v3, ``.zgroup`` and ``.zattrs`` for v2) is held back in memory
and written last, ``.zattrs`` (where the OME metadata lives) at the very end. Until then no
reader sees an OME-Zarr image there: a run that fails or is killed midway leaves objects under
the prefix but no root metadata, so the output does not exist (``--overwrite`` is not needed to
write it again; a new attempt removes the leftovers first). Replacing an existing output first
removes its root metadata (unpublishing it), then the rest.

On a local disk the group is written in a hidden folder beside the output and renamed into place
(:func:`~segpipe.models.foundation.atomic_output`), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Iterator
from typing import Literal

import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, WrapperStore

from segpipe.models.foundation import atomic_output
from segpipe.pipeline import storage

__all__ = ["ROOT_METADATA", "DeferredRootStore", "output_group"]

#: the root metadata objects of a Zarr group, in the order they are published
ROOT_METADATA = (".zgroup", "zarr.json", ".zattrs")


class DeferredRootStore(WrapperStore[FsspecStore]):
    """A store that holds the root metadata objects back until :meth:`publish`."""

    def __init__(self, store: FsspecStore) -> None:
        super().__init__(store)
        self.held: dict[str, Buffer] = {}

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """The held object, or the store's."""
        if key in self.held and byte_range is None:
            return self.held[key]
        return await self._store.get(key, prototype, byte_range)

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        """Whether the object is held or stored."""
        return key in self.held or await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        """Hold root metadata; write everything else."""
        if key in ROOT_METADATA:
            self.held[key] = value
        else:
            await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """As :meth:`set`, unless the object exists."""
        if not await self.exists(key):
            await self.set(key, value)

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        await asyncio.gather(*(self.set(key, value) for key, value in values))

    def publish(self) -> None:
        """Write the held root metadata, in :data:`ROOT_METADATA` order."""
        for key in ROOT_METADATA:
            if key in self.held:
                sync(self._store.set(key, self.held[key]))


def unpublish(url: str) -> None:
    """Remove a Zarr tree at ``url``: its root metadata first, then everything under it."""
    for key in reversed(ROOT_METADATA):
        storage.remove(storage.join(url, key))
    storage.remove_tree(url)


@contextlib.contextmanager
def output_group(out: str, zarr_format: Literal[2, 3]) -> Iterator[zarr.Group]:
    """A new, empty Zarr group to write the output ``out`` into; published when the body returns.

    See the module docstring: renamed into place on disk; on a bucket written in place with the
    root metadata last. On error nothing is published (leftover objects are removed).
    """
    if not storage.is_url(out):
        with atomic_output(out) as partial:
            yield zarr.open_group(partial, mode="w", zarr_format=zarr_format)
        return
    unpublish(out)
    store = DeferredRootStore(storage.zarr_store(out))
    try:
        yield zarr.open_group(store, mode="w", zarr_format=zarr_format)
    except BaseException:
        storage.remove_tree(out)
        raise
    store.publish()
