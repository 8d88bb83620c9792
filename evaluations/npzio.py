"""Streaming access to the ``arr_0`` images of an npz without loading them all.

A 50k x 256 x 256 x 3 uint8 batch is ~10 GB; as float32 it would be 40 GB. ``np.savez`` stores its
members uncompressed, so ``arr_0`` is memory-mapped straight out of the zip; a compressed member
is decoded sequentially in chunks instead. Either way callers see uint8 NHWC batches.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from evaluations.errors import EvalError

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header, 30 bytes


@dataclass(frozen=True)
class ImageArray:
    """Where ``arr_0`` lives inside an npz and what it holds (validated)."""

    path: Path
    shape: tuple[int, ...]  # (N, H, W, 3)
    dtype: np.dtype
    data_offset: int | None  # byte offset of the raw array for a stored member, else None

    @property
    def num_images(self) -> int:
        return self.shape[0]

    @property
    def resolution(self) -> int:
        return self.shape[1]


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise EvalError(f"{path}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EvalError(f"{path}: not a readable npz (truncated or corrupt: {exc})") from None


def npz_keys(path: str | Path) -> list[str]:
    with _open_zip(Path(path)) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def _read_npy_header(f, path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    try:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = reader(f)
    except (ValueError, KeyError, EOFError) as exc:
        raise EvalError(f"{path}: arr_0 has a corrupt .npy header ({exc})") from None
    return shape, dtype, fortran


def _stored_offset(path: Path, info: zipfile.ZipInfo) -> int:
    # The central directory's header offset points at the local header, whose name/extra
    # lengths can differ from the central copy, so read them from the local header itself.
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def open_images(path: str | Path) -> ImageArray:
    """Validate ``arr_0`` of ``path`` as uint8 NHWC RGB with H == W and locate its bytes."""
    path = Path(path)
    with _open_zip(path) as zf:
        if "arr_0.npy" not in zf.namelist():
            raise EvalError(f"{path}: has no arr_0 (keys: {npz_keys(path)})")
        info = zf.getinfo("arr_0.npy")
        with zf.open(info) as f:
            shape, dtype, fortran = _read_npy_header(f, path)
            header_len = f.tell()
    _check_layout(path, shape, dtype, fortran)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if info.file_size < header_len + nbytes:
        raise EvalError(f"{path}: arr_0 is truncated ({info.file_size} of {header_len + nbytes} bytes)")
    offset = None
    if info.compress_type == zipfile.ZIP_STORED:
        offset = _stored_offset(path, info) + header_len
        if path.stat().st_size < offset + nbytes:
            raise EvalError(
                f"{path}: file is truncated (arr_0 needs {offset + nbytes} bytes, file has {path.stat().st_size})"
            )
    return ImageArray(path, tuple(shape), dtype, offset)


def _check_layout(path: Path, shape, dtype: np.dtype, fortran: bool) -> None:
    if len(shape) != 4:
        raise EvalError(f"{path}: arr_0 must be [N, H, W, 3] images, got shape {tuple(shape)}")
    if shape[-1] != 3 and shape[1] == 3:
        raise EvalError(
            f"{path}: arr_0 has shape {tuple(shape)}, which looks like NCHW; images must be NHWC [N, H, W, 3]"
        )
    if shape[-1] != 3:
        raise EvalError(f"{path}: arr_0 must have 3 colour channels last, got shape {tuple(shape)}")
    if shape[1] != shape[2]:
        raise EvalError(f"{path}: images must be square, got {shape[1]}x{shape[2]}")
    if fortran:
        raise EvalError(f"{path}: arr_0 is Fortran-ordered; save a C-ordered array")
    if dtype != np.uint8:
        raise EvalError(f"{path}: arr_0 has dtype {dtype}; expected uint8 images in 0..255{_describe_bad_values(path)}")


def _describe_bad_values(path: Path) -> str:
    # Only reached on the error path, so loading the array whole is acceptable here.
    try:
        arr = np.load(path)["arr_0"]
    except Exception:  # noqa: BLE001 - the dtype message alone still applies
        return ""
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        return " (it contains NaN values)"
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        return f" (values span {arr.min()}..{arr.max()}, outside 0..255)"
    if np.issubdtype(arr.dtype, np.floating):
        return " (float images: convert with np.clip(x, 0, 255).astype(np.uint8))"
    return ""


def iter_image_batches(images: ImageArray, batch_size: int) -> Iterator[np.ndarray]:
    """Yield uint8 [b, H, W, 3] batches in file order."""
    n = images.num_images
    if images.data_offset is not None:
        mm = np.memmap(images.path, dtype=np.uint8, mode="r", offset=images.data_offset, shape=images.shape)
        for start in range(0, n, batch_size):
            yield np.array(mm[start : start + batch_size])
        return
    per_image = int(np.prod(images.shape[1:]))
    with zipfile.ZipFile(images.path) as zf, zf.open("arr_0.npy") as f:
        _read_npy_header(f, images.path)
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            raw = f.read(count * per_image)
            if len(raw) != count * per_image:
                raise EvalError(f"{images.path}: arr_0 ends early (truncated npz)")
            yield np.frombuffer(raw, np.uint8).reshape((count,) + images.shape[1:])


def read_optional(path: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The small arrays ``keys`` of the npz (e.g. mu, sigma) when all are present; None when
    none is; a partial set is an error (the reference would fail on it too)."""
    path = Path(path)
    with _open_zip(path) as zf:
        names = set(zf.namelist())
    present = [k for k in keys if f"{k}.npy" in names]
    if not present:
        return None
    if len(present) != len(keys):
        missing = [k for k in keys if k not in present]
        raise EvalError(
            f"{path}: has precomputed {'/'.join(present)} but not "
            f"{'/'.join(missing)}; store all of {'/'.join(keys)} or none"
        )
    try:
        with np.load(path) as data:
            return {k: np.asarray(data[k]) for k in keys}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise EvalError(f"{path}: cannot read {keys} ({exc})") from None
