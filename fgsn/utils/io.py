"""File helpers shared by every package: image reading with clear errors (a corrupt or truncated file names
itself instead of decoding to grey), atomic writes (write to a temporary file, then replace) and kill-safe
resumable HDF5 files (:class:`H5GroupWriter`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .errors import UserError


class ImageReadError(UserError, ValueError):
    """An image file is missing, truncated or not decodable; the message names the file and the problem."""


def read_image(path: str | Path, grayscale: bool = False) -> np.ndarray:
    """Read an image fully (truncated JPEG/PNG files are detected, unlike ``cv2.imread``).

    Args:
        path: image file.
        grayscale: return (H, W) luminance instead of (H, W, 3) RGB.
    Returns:
        uint8 array, (H, W, 3) RGB or (H, W).
    Raises:
        ImageReadError: missing file, truncated or corrupt data (message names the file and the decoder error).
    """
    from PIL import Image, ImageFile

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file not found")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if grayscale else "RGB")
            return np.asarray(im).copy()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot decode image ({e})") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path beside ``path`` to write to (with any writer: text,
    h5py, ``torch.save``); on success it replaces ``path`` (``os.replace``, atomic on one filesystem), on an
    exception it is removed and ``path`` is left untouched. A run killed mid-write never leaves a partial
    ``path``: at worst a stale ``<name>.tmp`` that the next write overwrites.

    Example::

        with atomic_path(out / "labels.h5") as tmp:
            with h5py.File(tmp, "w") as f:
                ...
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_h5_atomic(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write an HDF5 file of datasets atomically (:func:`atomic_path`), creating its folder; returns ``path``.

    Args:
        path: the file to write.
        arrays: dataset name -> array, in the order they are created; the key ``attrs`` (a mapping) holds the
            file attributes instead.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in arrays.items():
            if k != "attrs":
                f[k] = v
        f.attrs.update(arrays.get("attrs", {}))
    return path


class H5GroupWriter:
    """Adds named groups to an HDF5 file so that a process killed at any moment loses at most the group it was
    writing, the file itself is always complete, and adding groups never rewrites the data already there.

    h5py writes a file in place: a process killed while the file is open for writing can leave it unreadable as
    a whole (measured: about one kill in 40 during small appends). Here each group is first written to its own
    small file ``<path>.parts/<hash of name>.h5``, atomically (:func:`atomic_path`). :meth:`commit` copies the
    pending parts into one new shard ``<path>.shards/<n>.h5`` (atomically), then replaces ``path`` (atomically)
    by a copy of itself with an HDF5 external link per new group to its shard, then deletes the parts and the
    shards no group links to any more. ``path`` itself holds links and attributes only, so a commit costs the
    new groups plus the (small) index, not the whole cache: on a whole benchmark's SIFT file (tens of GB) the
    former full-file copy per writing step is gone. Readers open ``path`` as any HDF5 file (h5py follows the
    links, relative to ``path``'s folder, so the pair moves together); ``visititems`` does not follow external
    links: list names with :func:`h5_group_names`. A self-contained single file:
    ``h5py.File(path).copy("/", ...)`` with ``expand_external=True``, or :func:`h5_consolidate`.

    A run killed before its commit leaves its finished groups as parts: :meth:`pending` lists them, and the next
    commit (of any run) adds them. Files written by earlier versions (groups stored in ``path`` itself) are read
    and extended as they are (their own groups stay in ``path``). This process must be the file's only writer.

    Example::

        writer = H5GroupWriter(out)
        done = names_in(out) | set(writer.pending())
        try:
            for name, lab in results:
                with writer.group(name) as g:
                    g.create_dataset("labels", data=lab)
        finally:
            writer.commit({"num_classes": K})
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.shards_dir = self.path.with_name(self.path.name + ".shards")

    def _part(self, name: str) -> Path:
        return self.parts_dir / (hashlib.sha1(name.encode()).hexdigest()[:24] + ".h5")

    def pending(self) -> list[str]:
        """Names of the groups written but not committed yet (by this writer or by a killed run's)."""
        import h5py

        names = []
        for part in sorted(self.parts_dir.glob("*.h5")) if self.parts_dir.is_dir() else []:
            with h5py.File(part, "r") as f:
                names.append(str(f.attrs["name"]))
        return names

    def discard(self) -> None:
        """Delete the pending groups (e.g. before recomputing everything)."""
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    @contextmanager
    def group(self, name: str) -> Iterator[Any]:
        """Yield a new, empty h5py group ``name`` (``/`` makes nested groups) to fill; on success it is pending,
        replacing a pending group of the same name; on an exception nothing is kept."""
        import h5py

        self.parts_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._part(name)) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["name"] = name
            yield f.create_group(name)

    def _new_shard(self, parts: list[Path]) -> tuple[str, list[str]]:
        """Copy the parts' groups into a new shard file; returns its path relative to ``path``'s folder and the
        group names (a name written twice: the later part)."""
        import h5py

        self.shards_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.stem) for p in self.shards_dir.glob("*.h5") if p.stem.isdigit()]
        shard = self.shards_dir / f"{max(numbers, default=0) + 1:06d}.h5"
        names = []
        with atomic_path(shard) as tmp, h5py.File(tmp, "w") as f:
            for part in parts:
                with h5py.File(part, "r") as src:
                    name = str(src.attrs["name"])
                    if name in f:
                        del f[name]
                    else:
                        names.append(name)
                    src.copy(src[name], f, name=name)
        return f"{self.shards_dir.name}/{shard.name}", names

    def _collect_shards(self) -> None:
        """Delete the shard files no external link of ``path`` points to (replaced groups, killed commits)."""
        import h5py

        if not self.shards_dir.is_dir():
            return
        used = set()
        if self.path.exists():
            with h5py.File(self.path, "r") as f:
                f.visititems_links(lambda n, link: used.add(Path(link.filename).name)
                                   if isinstance(link, h5py.ExternalLink) else None)
        for shard in self.shards_dir.glob("*.h5*"):
            if shard.name not in used:
                shard.unlink()

    def commit(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Add the pending groups to ``path`` (replacing groups of the same name) and set the file attributes
        ``attrs`` (a value None deletes the attribute), atomically; ``path`` is created when missing and left
        untouched when there is nothing to do."""
        import h5py

        parts = sorted(self.parts_dir.glob("*.h5")) if self.parts_dir.is_dir() else []
        attrs = dict(attrs or {})
        if not parts and self.path.exists():
            with h5py.File(self.path, "r") as f:
                if all(k not in f.attrs if v is None else k in f.attrs and np.array_equal(f.attrs[k], v)
                       for k, v in attrs.items()):
                    self.discard()  # stale temporary files only
                    return self.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shard, names = self._new_shard(parts) if parts else (None, [])
        with atomic_path(self.path) as tmp:
            exists = self.path.exists()
            if exists:
                shutil.copyfile(self.path, tmp)  # the index: links and attributes (and an old file's groups)
            with h5py.File(tmp, "a" if exists else "w") as f:
                for name in names:
                    if f.get(name, getlink=True) is not None:  # also a link whose shard is gone
                        del f[name]
                    f[name] = h5py.ExternalLink(shard, name)
                for k, v in attrs.items():
                    if v is not None:
                        f.attrs[k] = v
                    elif k in f.attrs:
                        del f.attrs[k]
        self.discard()
        self._collect_shards()
        return self.path


def h5_group_names(path: str | Path, member: str) -> set[str]:
    """Names of the groups of an :class:`H5GroupWriter` file: its external links, and (files of earlier versions,
    whose groups are stored in the file) the groups holding ``member`` (e.g. ``"labels"``). Opens no shard; an
    empty set when ``path`` does not exist."""
    import h5py

    names: set[str] = set()
    if not Path(path).exists():
        return names

    def visit(name, link):
        if isinstance(link, h5py.ExternalLink):
            names.add(name)
        elif name.endswith("/" + member):
            names.add(name[:-len(member) - 1])

    with h5py.File(path, "r") as f:
        f.visititems_links(visit)
    return names


def h5_consolidate(path: str | Path, out: str | Path) -> Path:
    """Write ``path`` with every external link replaced by the data it points to: one self-contained HDF5 file
    ``out`` (atomically), e.g. to hand a label file to someone without its shards."""
    import h5py

    with atomic_path(out) as tmp, h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for name in src:
            src.copy(src[name], dst, name=name, expand_external=True)
        dst.attrs.update(dict(src.attrs))
    return Path(out)
