# SPDX-License-Identifier: MIT
"""A user's own images: an image folder (``folder:DIR``) or a NumPy archive (``npz:FILE``).

* ``folder:DIR``: ``DIR/<class>/*.{png,jpg,jpeg,bmp,webp,tif,tiff,gif}`` (one split: every
  image is training data, the test split is empty), or ``DIR/train/<class>/...`` and
  ``DIR/test/<class>/...``. Files of other types, sub-folders of class folders and images
  outside any class folder are skipped with a warning that counts them (hidden files and
  folders, ``.name``, silently). Class names are the sorted sub-folder names (the same classes in
  both splits). Images are decoded once with Pillow into a uint8 cache (``(N, C, H, W)`` +
  labels, a ``.npz`` without pickles) that is reused while the files are unchanged (same
  names, sizes and modification times); the cache lives under ``$ONELIP_CACHE`` or
  ``~/.cache/onelip/images``, never in the data folder unless ``cache_dir`` says so.
  Grayscale images of more than 8 bits a pixel (16-bit PNG or TIFF, 32-bit integer or float
  TIFF) are scaled by their bit depth to the 0..255 of 8-bit images (a 16-bit v becomes
  round(v · 255 / 65535)), never clipped.
* ``npz:FILE``: arrays ``x`` (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1], and ``y``
  integer labels; optionally ``x_test`` / ``y_test``. The layout is the one whose channel
  axis holds 1, 3 or 4; an array where both candidate axes do (4×4 RGB images (N, 4, 4, 3))
  needs ``layout='NHWC'`` (``onelip train --layout``) or an array ``layout`` in the file.

Every error is one line that names the file or folder and says what to do.

Shapes: :func:`read_image_folder` returns ``x`` uint8 (N, C, H, W), ``y`` int64 (N,);
the :class:`~onelip.data.DataSplit` of :func:`load_folder` / :func:`load_npz` holds float32
(N, C·H·W) in [0, 1], like every other image set.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onelip._errors import Argument, ArgumentError
from onelip._memory import available_bytes, size_text
from onelip.data._split import DataSplit
from onelip.data.files import _num_classes

__all__ = ["EXTENSIONS", "LAYOUTS", "ImageArrays", "folder_classes", "load_folder", "load_npz",
           "read_image_folder"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
_CACHE_FORMAT = "onelip-images/2"  # 2: images of more than 8 bits scaled, not clipped


@dataclass(frozen=True)
class ImageArrays:
    """Decoded images of one split: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,), the class
    names (index = label), and a note for each conversion applied (e.g. gray → RGB)."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    notes: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    """What the listing left out and why (files of other types, sub-folders of class
    folders, images outside any class folder); :func:`load_folder` prints it as a warning."""


def _shown(path: str | Path) -> str:
    """``path`` as it can be printed: bytes of a name that is not UTF-8 as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _reason(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def _default_cache_dir() -> Path:
    env = os.environ.get("ONELIP_CACHE")
    return Path(env) / "images" if env else Path.home() / ".cache" / "onelip" / "images"


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class _Skipped:
    """What the listing of a folder leaves out, so that it can say so (hidden files and
    folders, whose names start with a dot, are left out silently)."""

    types: dict[str, int]
    """extension (or the name, without one) -> files of types onelip does not read"""
    folders: list[str]
    """sub-folders of class folders (their images are not read)"""
    loose: int = 0
    """images directly in the root, outside any class folder"""

    def message(self, root: Path) -> str | None:
        parts = []
        n_types = sum(self.types.values())
        if n_types:
            kinds = ", ".join(sorted(self.types)[:6]) + (", ..." if len(self.types) > 6 else "")
            parts.append(f"{n_types} file{'s' if n_types != 1 else ''} of other types "
                         f"({kinds}; onelip reads {', '.join(EXTENSIONS)})")
        if self.folders:
            n = len(self.folders)
            parts.append(f"{n} sub-folder{'s' if n != 1 else ''} of class folders (e.g. "
                         f"{_shown(self.folders[0])}; images must sit directly in "
                         f"{_shown(root)}/<class>/)")
        if self.loose:
            parts.append(f"{self.loose} image{'s' if self.loose != 1 else ''} directly in "
                         f"{_shown(root)}, outside any class folder")
        if not parts:
            return None
        return f"{_shown(root)}: skipped " + "; ".join(parts)


def _files(class_dir: Path, skipped: _Skipped) -> list[tuple[str, int, int]]:
    """(file, size, mtime_ns) of the images of ``class_dir``, sorted by name: one ``scandir``
    and one ``stat`` a file (50,000 CIFAR-10 files are listed and fingerprinted in well under
    a second). Other files and sub-folders are counted in ``skipped``."""
    out = []
    with os.scandir(class_dir) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            ext = os.path.splitext(e.name)[1].lower()
            if e.is_dir():
                skipped.folders.append(e.path)
            elif ext in EXTENSIONS and e.is_file():
                st = e.stat()
                out.append((e.name, st.st_size, st.st_mtime_ns))
            else:
                kind = ext or _shown(e.name)
                skipped.types[kind] = skipped.types.get(kind, 0) + 1
    out.sort()
    base = os.fspath(class_dir)
    return [(os.path.join(base, name), size, mtime) for name, size, mtime in out]


def _listing(root: Path, classes: list[str]) -> tuple[list[tuple[int, str, int, int]], _Skipped]:
    """(label, file, size, mtime_ns) of every image under ``root/<class>/``, and what was
    skipped; errors on a class without images."""
    out: list[tuple[int, str, int, int]] = []
    skipped = _Skipped({}, [])
    for label, name in enumerate(classes):
        d = root / name
        files = _files(d, skipped) if d.is_dir() else []
        if not files:
            raise ValueError(f"class folder {_shown(d)} holds no images "
                             f"({', '.join(EXTENSIONS)}); add images or remove the folder")
        out += [(label, f, size, mtime) for f, size, mtime in files]
    with os.scandir(root) as it:
        skipped.loose = sum(1 for e in it if not e.name.startswith(".")
                            and os.path.splitext(e.name)[1].lower() in EXTENSIONS
                            and e.is_file())
    return out, skipped


def _fingerprint(root: Path, entries: list[tuple[int, str, int, int]],
                 resize: tuple[int, int] | None) -> str:
    """A hash of the folder's resolved path and of each image's label, path under it, size
    and modification time: any added, removed, renamed, rewritten or relabelled file changes
    it."""
    h = hashlib.sha256(_CACHE_FORMAT.encode())
    h.update(json.dumps([str(root.resolve()), list(resize) if resize else None]).encode())
    cut = len(os.fspath(root))
    rows = "".join(f"{label}\0{f[cut:]}\0{size}\0{mtime}\n" for label, f, size, mtime in entries)
    h.update(rows.encode("utf-8", "surrogateescape"))  # file names need not be UTF-8
    return h.hexdigest()[:32]


def _check_fits(n: int, per_image: int, what: str) -> None:
    """Refuse, before allocating, ``n`` images of ``per_image`` bytes that do not fit in the
    memory available (:func:`onelip._memory.available_bytes`)."""
    need, free = n * per_image, available_bytes()
    if free is not None and need > free:
        raise ArgumentError(f"{n:,} images of {what} need {size_text(need)} of memory as "
                            f"uint8, more than the {size_text(free)} available; pass a smaller ",
                            Argument("resize", "resize=(H, W)"),
                            " or use fewer images")


def _decode(entries: list[tuple[int, str, int, int]], resize: tuple[int, int] | None,
            progress: bool) -> tuple[np.ndarray, list[str]]:
    """The images of ``entries`` as one uint8 array (N, C, H, W), written in place image by
    image (no list of arrays, no stacked copy); the notes of the conversions applied."""
    from PIL import Image, UnidentifiedImageError

    n = len(entries)
    if resize is not None:  # before any image is resized: RGB at the size asked for
        _check_fits(n, 3 * resize[0] * resize[1], f"3×{resize[0]}×{resize[1]} (resize)")
    modes: dict[str, int] = {}
    first: tuple[int, int] | None = None  # (H, W) of the first image
    first_name = ""
    x: np.ndarray | None = None  # (N, C, H, W), C = 1 until a colour image comes
    n_gray = 0
    bar = _progress(n, "decoding images") if progress else None
    for i, (_, f, _, _) in enumerate(entries):
        try:
            with Image.open(f) as im:
                im.load()
                modes[im.mode] = modes.get(im.mode, 0) + 1
                if im.mode in _DEEP_MODES:
                    a = _deep_gray(im, f, resize)
                else:
                    im = im.convert("RGB" if im.mode not in ("L", "1") else "L")
                    if resize is not None:
                        im = im.resize((resize[1], resize[0]), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
        except _ImageValueError:
            raise
        except Image.DecompressionBombError as e:
            raise ValueError(f"image {_shown(f)} is too large to decode safely ({_reason(e)}); "
                             "shrink it, or remove it from the folder") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise ValueError(f"cannot read image {_shown(f)} ({_reason(e)}); remove or replace "
                             "the file") from None
        hw = a.shape[:2]
        if first is None:
            first, first_name = hw, str(f)
            if resize is None:
                c = 1 if a.ndim == 2 else 3
                _check_fits(n, c * hw[0] * hw[1], f"{c}×{hw[0]}×{hw[1]} ({_shown(f)})")
            x = np.empty((n, 1 if a.ndim == 2 else 3, *hw), dtype=np.uint8)
        elif hw != first:
            raise ArgumentError(f"images have different sizes: {_shown(f)} is {hw[0]}×{hw[1]}, "
                                f"{_shown(first_name)} is {first[0]}×{first[1]}; pass ",
                                Argument("resize", "resize=(H, W)"))
        if a.ndim == 2:
            n_gray += 1
            x[i] = a  # broadcast over the channels: gray → RGB when x has 3
        else:
            if x.shape[1] == 1:  # the first colour image after gray ones: RGB from now on
                x = np.repeat(x, 3, axis=1)
            x[i] = a.transpose(2, 0, 1)
        if bar is not None and (i % 500 == 0 or i + 1 == n):
            bar(i + 1)
    notes: list[str] = []
    deep = {m: k for m, k in modes.items() if m in _DEEP_MODES}
    if deep:
        notes.append(f"{sum(deep.values())} grayscale image(s) of more than 8 bits a pixel "
                     f"(Pillow mode {', '.join(sorted(deep))}) were scaled to 0..255 by their "
                     "bit depth")
    if 0 < n_gray < n:  # mixed: the gray ones became RGB; say so
        notes.append(f"{n_gray} grayscale image(s) among colour ones were converted to RGB")
    return x, notes


_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
"""Pillow's grayscale modes of more than 8 bits a pixel: 16-bit integers (``I;16*``: 16-bit
PNG and TIFF), 32-bit integers (``I``) and 32-bit floats (``F``)."""


class _ImageValueError(ValueError):
    """An image whose pixels onelip cannot map to 0..255 (the message names the file)."""


def _deep_gray(im, f: str, resize: tuple[int, int] | None) -> np.ndarray:
    """A grayscale image of more than 8 bits as uint8 (H, W), scaled by its bit depth to the
    0..255 of 8-bit images: ``round(v · 255 / 65535)`` for 16-bit integers (and for 32-bit
    ``I`` images whose values fit 16 bits, which is how 16-bit data often arrives),
    ``round(v · 255)`` for floats in [0, 1]; resized (bilinear) before the rounding."""
    from PIL import Image

    a = np.asarray(im)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode == "F":
        if not np.isfinite(a).all() or lo < 0 or hi > 1:
            raise _ImageValueError(f"image {f} holds float pixels in [{lo:g}, {hi:g}]; onelip "
                                   "reads float images in [0, 1]: rescale it, or save it as an "
                                   "8- or 16-bit image")
        scale = 255.0
    else:
        if lo < 0 or hi > 65535:
            raise _ImageValueError(f"image {f} holds 32-bit integer pixels in [{lo:g}, "
                                   f"{hi:g}]; onelip reads images of up to 16 bits (0..65535): "
                                   "save it as an 8- or 16-bit image")
        scale = 255.0 / 65535.0
    v = a.astype(np.float32) * np.float32(scale)
    if resize is not None:
        v = np.asarray(Image.fromarray(v, "F").resize((resize[1], resize[0]), Image.BILINEAR))
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def _progress(total: int, what: str):
    """A minimal progress line on a TTY (rich is not needed for one counter)."""
    if not sys.stderr.isatty():
        return None

    def update(done: int) -> None:
        end = "\n" if done == total else "\r"
        print(f"{what}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return update


def read_image_folder(root: str | Path, *, classes: list[str] | None = None,
                      resize: tuple[int, int] | None = None, cache_dir: str | Path | None = None,
                      progress: bool = True) -> ImageArrays:
    """Decode ``root/<class>/*`` into uint8 arrays, through the cache.

    Args:
        root: the folder holding one sub-folder per class.
        classes: the class names to read (default: the sub-folders of ``root``); a split read
            after another uses the first one's classes, so labels mean the same.
        resize: (H, W) to resize every image to (bilinear); default: keep the size, which must
            then be the same for all images.
        cache_dir: where the decoded arrays are kept. Default: ``$ONELIP_CACHE/images`` or
            ``~/.cache/onelip/images``.
        progress: show a counter on a TTY while decoding.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: no class folders, a class without images, an unreadable image, images of
            different sizes (without ``resize``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist (expected "
                                f"{root}/<class>/*.jpg or {root}/train/<class>/*.jpg)")
    if classes is None:
        classes = [d.name for d in _class_dirs(root)]
        if not classes:
            raise ValueError(f"{root} has no class sub-folders; expected {root}/<class>/*.jpg")
        for name in classes:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"class folder {_shown(root / name)}: its name is not valid "
                                 "UTF-8 (class names are written to the run's config.json); "
                                 "rename the folder") from None
    else:
        extra = sorted({d.name for d in _class_dirs(root)} - set(classes))
        if extra:
            raise ValueError(f"{root} has classes the training split does not have: "
                             f"{', '.join(extra)}")
    if resize is not None and (len(resize) != 2 or min(resize) < 1):
        raise ValueError(f"resize must be (H, W) with positive sizes, but got {resize}")
    entries, skipped = _listing(root, classes)
    said = skipped.message(root)
    said = (said,) if said else ()
    key = _fingerprint(root, entries, tuple(resize) if resize else None)
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    path = cache / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return ImageArrays(z["x"], z["y"], tuple(meta["classes"]), tuple(meta["notes"]),
                                   said)
        except (OSError, ValueError, KeyError):
            pass  # an unreadable cache is rebuilt
    x, notes = _decode(entries, tuple(resize) if resize else None, progress)
    y = np.asarray([e[0] for e in entries], dtype=np.int64)
    meta = json.dumps({"format": _CACHE_FORMAT, "root": str(root.resolve()),
                       "classes": list(classes), "notes": notes})
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{key}.{os.getpid()}.tmp.npz"
        np.savez(tmp, x=x, y=y, meta=np.asarray(meta))
        os.replace(tmp, path)
    except OSError as e:  # no cache: still usable
        print(f"onelip: warning: cannot write the image cache in {cache} ({e})",
              file=sys.stderr)
    return ImageArrays(x, y, tuple(classes), tuple(notes), said)


def _to_split(name: str, train: ImageArrays, test: ImageArrays | None) -> DataSplit:
    c, h, w = train.x.shape[1:]
    if test is not None and test.x.shape[1:] != train.x.shape[1:]:
        raise ArgumentError(f"{name}: test images are {tuple(test.x.shape[1:])} (C, H, W) but "
                            f"training images {tuple(train.x.shape[1:])}; pass ",
                            Argument("resize", "resize=(H, W)"))

    def flat(a: ImageArrays | None) -> tuple[torch.Tensor, torch.Tensor]:
        if a is None:
            return (torch.zeros(0, c * h * w, dtype=torch.uint8),
                    torch.zeros(0, dtype=torch.int64))
        return torch.from_numpy(a.x).reshape(a.x.shape[0], -1), torch.from_numpy(a.y)

    return DataSplit(name, *flat(train), *flat(test), max(len(train.classes), 2), (c, h, w))


_SPLITS = ("train", "test", "val")


def _has_images(d: Path) -> bool:
    with os.scandir(d) as it:
        return any(os.path.splitext(e.name)[1].lower() in EXTENSIONS and e.is_file()
                   for e in it)


def _layout(d: Path) -> tuple[Path, Path | None]:
    """(the folder of the training classes, that of the test classes or None) of ``d``.

    The split layout, ``d/train/<class>/`` (and ``d/test/<class>/``), is read from the whole
    tree, not from one name: every sub-folder of ``d`` is ``train``, ``test`` or ``val``,
    ``train`` is one of them, and each holds class sub-folders and no images of its own.
    Otherwise every sub-folder is a class (a class may be called ``train``). A ``val`` folder
    is not read (onelip carves its validation split with ``val_fraction``): a warning says so.
    """
    if not d.is_dir():
        return d, None
    subs = _class_dirs(d)
    names = {p.name for p in subs}
    if "train" not in names or not names <= set(_SPLITS):
        return d, None
    nested = [p for p in subs if _class_dirs(p)]
    if not nested:
        return d, None  # train/ (and test/) hold images: classes called so
    flat = [p for p in subs if p not in nested or _has_images(p)]
    if flat:
        raise ValueError(f"{d} mixes layouts: {nested[0]} holds class folders but {flat[0]} "
                         f"holds images directly; put them in {flat[0]}/<class>/ (the split "
                         f"layout {d}/train/<class>/), or rename {nested[0].name} if it is a "
                         "class")
    if "val" in names:
        print(f"onelip: warning: folder:{d}: {d / 'val'} is not read; onelip carves its "
              "validation split from train (--val-fraction); merge it into train or test",
              file=sys.stderr)
    return d / "train", (d / "test" if "test" in names else None)


def folder_classes(directory: str | Path) -> list[str]:
    """The class names of ``folder:DIR`` as :func:`load_folder` reads them (the sorted
    sub-folder names of ``DIR``, or of ``DIR/train`` in the split layout); [] when ``DIR``
    is not a folder."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return [p.name for p in _class_dirs(_layout(d)[0])]


def load_folder(directory: str | Path, *, resize: tuple[int, int] | None = None,
                cache_dir: str | Path | None = None, progress: bool = True) -> DataSplit:
    """``folder:DIR``: the images of ``DIR`` as a :class:`~onelip.data.DataSplit`.

    With ``DIR/train/<class>/`` (and optionally ``DIR/test/<class>/``) the two splits are
    read separately; otherwise every image of ``DIR/<class>/`` is training data and the test
    split is empty (measure on a validation split carved from the training data, and certify
    on another folder afterwards). The layout is read from the whole tree (:func:`_layout`):
    a class folder called ``train`` that holds images is a class.
    """
    d = Path(directory)
    name = f"folder:{directory}"
    train_dir, test_dir = _layout(d)
    train = read_image_folder(train_dir, resize=resize, cache_dir=cache_dir, progress=progress)
    test = None
    if test_dir is not None:
        test = read_image_folder(test_dir, classes=list(train.classes), resize=resize,
                                 cache_dir=cache_dir, progress=progress)
    for note in train.notes + (test.notes if test is not None else ()):
        print(f"onelip: note: {name}: {note}", file=sys.stderr)
    for said in train.skipped + (test.skipped if test is not None else ()):
        print(f"onelip: warning: {said}", file=sys.stderr)
    return _to_split(name, train, test)


LAYOUTS = ("NHWC", "NCHW")
"""The layouts of ``npz:`` images (``load_npz(layout=...)`` or an array ``layout`` in the file):
channels last (N, H, W, C) or channels first (N, C, H, W)."""

_CHANNELS = (1, 3, 4)


def _npz_pixels(path: Path, x: np.ndarray, key: str) -> np.ndarray:
    """x (N, H, W) or a 4-D array of either layout, uint8 or float in [0, 1] → uint8 of the
    same shape (a grey (N, H, W) gets a channel axis: (N, 1, H, W))."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{path}: {key} must be (N, H, W, C) or (N, C, H, W), but has shape "
                         f"{x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: {key} must be uint8 or float in [0, 1], but is {x.dtype}")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{path}: {key} has {bad} NaN or infinite values")
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if lo < 0 or hi > 1:
        raise ValueError(f"{path}: float {key} must lie in [0, 1], but ranges over "
                         f"[{lo:g}, {hi:g}]; divide by 255 or pass uint8")
    return np.round(x * 255.0).astype(np.uint8)


_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)
"""What NumPy's and zipfile's readers raise on a corrupt or truncated .npz."""


def _npz_array(path: Path, z, key: str) -> np.ndarray:
    """Array ``key`` of the open .npz ``z``; one line naming the file when it cannot be read
    (a corrupt or truncated member, or an object array, which would need a pickle)."""
    try:
        return z[key]
    except _CORRUPT as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{path}: array {key} holds Python objects, which onelip does not "
                             "load (a pickle can run code); save numeric arrays") from None
        raise ValueError(f"{path}: array {key} cannot be read ({_reason(e)}); the file is "
                         "corrupt or truncated: write it again with np.savez") from None


def _layout_option(path: Path, layout: object, stored: np.ndarray | None) -> str | None:
    """The layout asked for: the ``layout`` argument, else the array ``layout`` stored in the
    file, else None (decided from the shape)."""
    given = "layout"
    if layout is None and stored is not None:
        layout, given = stored, f"the array layout in {path}"
        layout = str(layout.item()) if layout.ndim == 0 and layout.dtype.kind in "US" else layout
    if layout is None:
        return None
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ArgumentError(f"{path}: {given} must be 'NHWC' (channels last) or 'NCHW' "
                            f"(channels first), but is {layout!r}; set ",
                            Argument("layout", "layout='NHWC' or 'NCHW'"))
    return layout.upper()


def _npz_layout(path: Path, shape: tuple[int, ...], key: str, layout: str | None) -> str:
    """'NHWC' or 'NCHW' of a 4-D ``key`` array: the one asked for (its channel axis must
    hold 1, 3 or 4 channels), else the one of the two candidate channel axes (1 and 3) that
    holds 1, 3 or 4; an array where both or neither do is refused (say which)."""
    first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
    if layout is not None:
        c = shape[3] if layout == "NHWC" else shape[1]
        if c not in _CHANNELS:
            raise ValueError(f"{path}: {key} of shape {shape} read as {layout} has {c} "
                             "channels; images have 1, 3 or 4 channels: check the layout")
        return layout
    if first != last or shape[1:] == (1, 1, 1):
        return "NHWC" if last and not first else "NCHW"
    readings = (f"{shape[1]} channels of {shape[2]}×{shape[3]} (NCHW) or {shape[3]} channels "
                f"of {shape[1]}×{shape[2]} (NHWC)" if first else
                "neither axis 1 nor axis 3 holds 1, 3 or 4 channels")
    raise ArgumentError(f"{path}: the layout of {key} {shape} is ambiguous: {readings}; say "
                        "which: save an array layout='NHWC' (channels last) or 'NCHW' "
                        "(channels first) in the file beside x, or set ",
                        Argument("layout", "layout='NHWC' or 'NCHW'"))


def _nchw(x: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NHWC" else x)


def _npz_labels(path: Path, y: np.ndarray, n: int, key: str) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{path}: {key} must be (N,) = ({n},) integer labels, but has shape "
                         f"{y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{path}: {key} must hold integer labels, but has {y.dtype} "
                             "values that are not integers")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise ValueError(f"{path}: {key} has negative labels ({int(y.min())})")
    return y


def load_npz(file: str | Path, *, layout: str | None = None) -> DataSplit:
    """``npz:FILE``: arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``) of a ``.npz``
    (read without pickles).

    Args:
        file: the ``.npz``; ``x`` (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1, 3 or
            4, uint8 or float in [0, 1]; ``y`` (N,) integer labels.
        layout: 'NHWC' (channels last) or 'NCHW' (channels first); default: an array
            ``layout`` in the file if it holds one, else decided from the shape: the layout
            whose channel axis holds 1, 3 or 4 (an array where both axes do, e.g. 4×4 RGB
            images (N, 4, 4, 3), is refused until the layout is given). ``x_test`` is read
            in the layout of ``x``.
    """
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"no .npz file at {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except _CORRUPT as e:
        raise ValueError(f"{path} is not a readable .npz file ({_reason(e)}); the file is "
                         "corrupt, truncated or not a .npz: write it again with np.savez"
                         ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):  # a .npy: one array, no labels
        raise ValueError(f"{path} holds one array (a .npy), not a .npz of x and y; save "
                         "them with np.savez(FILE, x=..., y=...)")
    with z:
        missing = [k for k in ("x", "y") if k not in z.files]
        if missing:
            raise ValueError(f"{path} has no array {' or '.join(missing)} (it holds "
                             f"{', '.join(z.files) or 'nothing'}); save x and y")
        layout = _layout_option(path, layout, _npz_array(path, z, "layout")
                                if "layout" in z.files else None)
        x = _npz_pixels(path, _npz_array(path, z, "x"), "x")
        y = _npz_labels(path, _npz_array(path, z, "y"), x.shape[0], "y")
        test = None
        if "x_test" in z.files:
            xt = _npz_pixels(path, _npz_array(path, z, "x_test"), "x_test")
            yt = _npz_labels(path, _npz_array(path, z, "y_test") if "y_test" in z.files
                             else np.zeros(0), xt.shape[0], "y_test")
            test = (xt, yt)
    if not len(y):
        raise ValueError(f"{path}: x holds no images; a training set needs images")
    # as strict as idx: 0..K-1 with every class present in y, y_test within them
    k = _num_classes(y, test[1] if test is not None else y[:0], path, train="y", test="y_test")
    layout = _npz_layout(path, x.shape, "x", layout)
    x = _nchw(x, layout)
    if test is not None:
        test = (_nchw(test[0], layout), test[1])
    classes = tuple(str(i) for i in range(k))
    train_a = ImageArrays(x, y, classes)
    test_a = ImageArrays(*test, classes) if test is not None else None
    return _to_split(f"npz:{file}", train_a, test_a)
