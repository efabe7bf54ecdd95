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
    writing, and the file itself is always complete.

    h5py writes a file in place: a process killed while the file is open for writing can leave it unreadable as
    a whole (measured: about one kill in 40 during small appends). Here each group is written to its own small
    file ``<path>.parts/<hash of name>.h5``, atomically (:func:`atomic_path`); :meth:`commit` copies ``path`` and
    every part into a temporary file, replaces ``path`` with it, then deletes the parts. A run killed before its
    commit leaves its finished groups as parts: :meth:`pending` lists them, and the next commit (of any run)
    adds them. This process must be the file's only writer.

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
        with atomic_path(self.path) as tmp:
            exists = self.path.exists()
            if exists:
                shutil.copyfile(self.path, tmp)  # over a killed commit's temporary file
            with h5py.File(tmp, "a" if exists else "w") as f:
                for part in parts:
                    with h5py.File(part, "r") as src:
                        name = str(src.attrs["name"])
                        if name in f:
                            del f[name]
                        src.copy(src[name], f, name=name)
                for k, v in attrs.items():
                    if v is not None:
                        f.attrs[k] = v
                    elif k in f.attrs:
                        del f.attrs[k]
        self.discard()
        return self.path
