"""ImageNet-scale training data: an ImageNet folder prepared ONCE into an uncompressed npz that
training memory-maps, so no process ever holds the dataset in RAM (ImageNet 128 is ~63 GB).

The file is OpenAI's npz (`arr_0` uint8 [N,H,W,3], `arr_1` int64 [N]) written with ZIP_STORED:
an uncompressed zip member is one contiguous byte range, so `open_dataset` maps `arr_0` in place
(np.memmap at its offset) and a DDP rank touches only the rows of its own share of each batch.
Every npz tool still reads it (np.load, the evaluator), and the workflow's file names stay.

`prepare_folder` writes that zip by hand, because zipfile cannot resume: images are decoded in a
process pool, appended in chunks of `chunk` images, and after each chunk is on disk a progress
marker records (images done, running CRC-32). A killed run restarts from the last marker
(truncating any later bytes); the finished file is renamed into place atomically, and it is
byte-identical to an uninterrupted run's (fixed zip timestamps, ordered writes).
Standard library + numpy + PIL only: prepare-data does not pay torch's import.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adm.data.datasets import DataError, check_dataset, list_image_files, read_image, stratified_split
from adm.fileio import atomic_write

FORMAT = "adm-npz-stored/1"  # progress-marker format; a marker of another format is ignored
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header (30 bytes), APPNOTE 4.3.7
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory header (46 bytes), 4.3.12
_EOCD64 = struct.Struct("<IQHHIIQQQQ")  # zip64 end of central directory record (56), 4.3.14
_LOCATOR = struct.Struct("<IIQI")  # zip64 end of central directory locator (20), 4.3.15
_EOCD = struct.Struct("<IHHHHIIH")  # end of central directory record (22), 4.3.16
_ZIP64, _VERSION, _U32 = 1, 45, 0xFFFFFFFF  # zip64 extra-field id, "version needed" for zip64
_DOS_DATE, _DOS_TIME = (0 << 9) | (1 << 5) | 1, 0  # 1980-01-01 00:00, as np.savez stamps members
_CRC_AT = 14  # byte offset of the CRC-32 inside a local header


# ----------------------------------------------------------------------------- reading (training)


def _member_data_offset(f, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored member's first data byte (after its local header)."""
    f.seek(info.header_offset)
    fields = _LOCAL.unpack(f.read(_LOCAL.size))
    if fields[0] != 0x04034B50:
        raise DataError(f"bad local header for {info.filename}")
    return info.header_offset + _LOCAL.size + fields[9] + fields[10]


def _npy_header(f) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DataError(f"unsupported .npy version {version}")
    return readers[version](f)


def map_images(path) -> np.memmap:
    """`arr_0` of an uncompressed npz as a read-only np.memmap (nothing is read until indexed)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            info = zf.getinfo("arr_0.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise DataError(
                    f"{path}: arr_0 is compressed, so it cannot be memory-mapped; save it with "
                    "np.savez (not savez_compressed) or write it with prepare-data"
                )
            f.seek(_member_data_offset(f, info))
            shape, fortran, dtype = _npy_header(f)
            start = f.tell()
            size = os.fstat(f.fileno()).st_size
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, struct.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot read dataset {path}: {e}") from None
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[-1] != 3:
        raise DataError(
            f"{path}: arr_0 must be uint8 [N,H,W,3], got {dtype} {list(shape)}"
            + (" in Fortran order" if fortran else "")
        )
    if shape[0] == 0:
        raise DataError(f"{path}: the dataset is empty")
    if start + int(np.prod(shape)) > size:
        raise DataError(f"cannot read dataset {path}: the file is truncated")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=tuple(shape))


def open_dataset(path, image_size: int | None = None) -> tuple[np.memmap, np.ndarray]:
    """(images as np.memmap [N,H,W,3], labels int64 [N] in RAM), with load_npz's checks.

    `images[idx]` reads only the rows in idx: how each DDP rank reads its share of a batch.
    """
    images = map_images(path)
    try:
        with np.load(path) as f:
            labels = f["arr_1"] if "arr_1" in f else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read dataset {path}: {e}") from None
    check_dataset(path, images, labels, image_size)
    return images, labels.astype(np.int64)


# ----------------------------------------------------------------------------- the zip layout


def _local_header(name: bytes, crc: int, size: int) -> bytes:
    extra = struct.pack("<HHQQ", _ZIP64, 16, size, size)  # always zip64: arr_0 may exceed 4 GiB
    return (
        _LOCAL.pack(
            0x04034B50, _VERSION, 0, zipfile.ZIP_STORED, _DOS_TIME, _DOS_DATE, crc, _U32, _U32, len(name), len(extra)
        )
        + name
        + extra
    )


def _central_header(name: bytes, crc: int, size: int, offset: int) -> bytes:
    big_offset = offset >= _U32
    extra = struct.pack("<QQ", size, size) + (struct.pack("<Q", offset) if big_offset else b"")
    extra = struct.pack("<HH", _ZIP64, len(extra)) + extra
    return (
        _CENTRAL.pack(
            0x02014B50,
            (3 << 8) | _VERSION,
            _VERSION,
            0,
            zipfile.ZIP_STORED,
            _DOS_TIME,
            _DOS_DATE,
            crc,
            _U32,
            _U32,
            len(name),
            len(extra),
            0,
            0,
            0,
            0o644 << 16,
            _U32 if big_offset else offset,
        )
        + name
        + extra
    )


def _directory_and_end(entries: list[bytes], cd_offset: int) -> bytes:
    cd = b"".join(entries)
    eocd64_at = cd_offset + len(cd)
    n = len(entries)
    return (
        cd
        + _EOCD64.pack(0x06064B50, _EOCD64.size - 12, (3 << 8) | _VERSION, _VERSION, 0, 0, n, n, len(cd), cd_offset)
        + _LOCATOR.pack(0x07064B50, 0, eocd64_at, 1)
        + _EOCD.pack(0x06054B50, 0, 0, n, n, min(len(cd), _U32), min(cd_offset, _U32), 0)
    )


def _npy_header_bytes(shape: tuple, dtype) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        b, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": tuple(int(s) for s in shape)}
    )
    return b.getvalue()


# ----------------------------------------------------------------------------- writing (prepare-data)


def _decode(job: tuple[str, int]) -> bytes:
    """Pool worker: one image file → its size×size×3 uint8 bytes (ADM's center crop)."""
    path, size = job
    return np.ascontiguousarray(read_image(Path(path), size)).tobytes()


def _save_progress(marker: Path, state: dict) -> None:
    """Record that `state['done']` images are on disk (called only after they are fsynced)."""
    atomic_write(marker, lambda f: f.write(json.dumps(state, sort_keys=True)), binary=False)


def _load_progress(marker: Path, fingerprint: str) -> dict | None:
    try:
        state = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(state, dict) and state.get("format") == FORMAT and state.get("fingerprint") == fingerprint
    return state if ok else None


def _fingerprint(files: list[Path], labels: np.ndarray, image_size: int) -> str:
    """Identity of what is being written: the file list in order, the labels and the size."""
    h = hashlib.sha256(f"{FORMAT} {image_size} {len(files)}\n".encode())
    h.update("\n".join(map(str, files)).encode())
    h.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def _decoder(workers: int):
    """decode(jobs) → decoded images in job order; a spawn pool (never a fork of a threaded
    parent) when workers > 1. Callers' scripts need the usual `if __name__ == "__main__":`."""
    if workers <= 1:
        yield lambda jobs: map(_decode, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda jobs: pool.imap(_decode, jobs, chunksize=16)


def write_images_npz(
    files: list[Path],
    labels: np.ndarray,
    image_size: int,
    dest,
    decode=None,
    chunk: int = 1024,
    bar: tqdm | None = None,
) -> None:
    """Decode `files` into `dest` (uncompressed npz), resuming a killed earlier call for `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial, marker = dest.with_name(f".{dest.name}.partial"), dest.with_name(f".{dest.name}.progress.json")
    n, img_bytes = len(files), image_size * image_size * 3
    npy = _npy_header_bytes((n, image_size, image_size, 3), np.uint8)
    head = _local_header(b"arr_0.npy", 0, len(npy) + n * img_bytes) + npy  # CRC patched at the end
    fingerprint = _fingerprint(files, labels, image_size)
    state = _load_progress(marker, fingerprint) if partial.exists() else None
    if state is not None and partial.stat().st_size >= len(head) + state["done"] * img_bytes:
        f = open(partial, "r+b")
        f.truncate(len(head) + state["done"] * img_bytes)  # drop a chunk written after the last marker
        f.seek(0, os.SEEK_END)
    else:
        state = {"format": FORMAT, "fingerprint": fingerprint, "done": 0, "crc": zlib.crc32(npy)}
        f = open(partial, "wb")
        f.write(head)
    try:
        if bar is not None:
            bar.update(state["done"])
        jobs = [(str(p), image_size) for p in files[state["done"] :]]
        buf = []
        for i, img in enumerate((decode or (lambda j: map(_decode, j)))(jobs), start=state["done"] + 1):
            buf.append(img)
            if len(buf) == chunk or i == n:
                data = b"".join(buf)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
                state = {**state, "done": i, "crc": zlib.crc32(data, state["crc"])}
                _save_progress(marker, state)
                if bar is not None:
                    bar.update(len(buf))
                buf = []
        _finish(f, state["crc"], len(npy) + n * img_bytes, labels)
    except DataError:  # a bad image: nothing worth resuming, leave no partial file behind
        f.close()
        partial.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        raise
    finally:
        f.close()
    os.replace(partial, dest)
    marker.unlink(missing_ok=True)


def _finish(f, crc0: int, size0: int, labels: np.ndarray) -> None:
    """Append arr_1, the central directory and the end records; patch arr_0's CRC; fsync."""
    lab = io.BytesIO()
    np.lib.format.write_array(lab, np.ascontiguousarray(labels, np.int64), allow_pickle=False)
    lab, crc1 = lab.getvalue(), zlib.crc32(lab.getvalue())
    at1 = f.tell()
    f.write(_local_header(b"arr_1.npy", crc1, len(lab)) + lab)
    cd_offset = f.tell()
    f.write(
        _directory_and_end(
            [_central_header(b"arr_0.npy", crc0, size0, 0), _central_header(b"arr_1.npy", crc1, len(lab), at1)],
            cd_offset,
        )
    )
    f.seek(_CRC_AT)
    f.write(struct.pack("<I", crc0))
    f.flush()
    os.fsync(f.fileno())


def synset_labels(files: list[Path], data_dir) -> tuple[np.ndarray, list[str]]:
    """Class = the image's top folder under data_dir (ImageNet's synset, e.g. n01440764); index =
    its rank among the sorted folder names. On ImageNet's train layout (n01440764/n01440764_10026.JPEG)
    this is the index ADM derives from the file-name prefix, so released checkpoints' labels match."""
    data_dir = Path(data_dir)
    tops = [p.relative_to(data_dir).parts for p in files]
    loose = [str(p) for p, parts in zip(files, tops) if len(parts) < 2]
    if loose:
        raise DataError(
            f"{loose[0]} is not inside a class folder; expected {data_dir}/<synset>/<image> "
            f"(ImageNet's train layout){f' ({len(loose)} such files)' if len(loose) > 1 else ''}"
        )
    names = [parts[0] for parts in tops]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[c] for c in names], np.int64), classes


def prepare_folder(
    data_dir,
    image_size: int,
    out_train,
    out_heldout=None,
    heldout_fraction: float = 0.0,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    chunk: int = 1024,
) -> dict:
    """ImageNet-style folder → train (and stratified held-out) npz, ready for `open_dataset`."""
    if image_size < 1 or workers < 1 or chunk < 1:
        raise DataError(f"image size, workers and chunk must be >= 1 (got {image_size}, {workers}, {chunk})")
    files = list_image_files(data_dir)
    labels, classes = synset_labels(files, data_dir)
    train, held = (
        stratified_split(labels, heldout_fraction, seed)
        if out_heldout is not None
        else (np.arange(len(files)), np.zeros(0, np.int64))
    )
    outputs = [(idx, dest) for idx, dest in ((train, out_train), (held, out_heldout)) if dest is not None]
    for idx, dest in outputs:
        if len(idx) == 0:
            raise DataError(f"no images left for {dest} (held-out fraction {heldout_fraction})")
    with (
        tqdm(
            total=sum(len(idx) for idx, _ in outputs),
            desc="prepare-data",
            unit="img",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar,
        _decoder(workers) as decode,
    ):
        for idx, dest in outputs:
            write_images_npz([files[i] for i in idx], labels[idx], image_size, dest, decode, chunk, bar)
    return {
        "dataset": "folder",
        "data_dir": str(data_dir),
        "n_train": int(len(train)),
        "n_heldout": int(len(held)),
        "image_size": image_size,
        "num_classes": len(classes),
        "classes": classes,
        "labels": "sorted synset folder names",
        "format": "npz, stored (memory-mappable)",
    }
