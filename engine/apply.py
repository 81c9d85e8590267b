"""Applying a style to files: outputs planned and checked up front, same-size images batched."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from .errors import ImageError, OutputError, UsageError
from .io.atomic import check_writable_folder
from .io.images import check_output, find_images, is_engine_output, load_image, save_image
from .stylize import Stylizer

Job = tuple[Path, Path]  # (input, output)


def plan_outputs(inputs: Sequence[Path], style: str, output: Path | None, out_dir: Path | None,
                 overwrite: bool = False) -> list[Job]:
    """Expand folders, name every output, and refuse unsafe ones before any work is done.

    A folder's images that the engine wrote (its earlier outputs) are skipped; inputs whose
    outputs would share a name (a.jpg and a.png) get their extension in it (a-jpg-starry.png)."""
    sources: list[Path] = []
    for item in inputs:
        if Path(item).is_dir():
            sources.extend(p for p in find_images(item) if not is_engine_output(p))
        elif not Path(item).exists():
            raise ImageError(f"{item}: no such file; check the path")
        else:
            sources.append(Path(item))
    sources = list(dict.fromkeys(sources))  # a file given twice is stylized once
    if not sources:
        raise UsageError("no input images to stylize (the folders hold only the engine's own "
                         "outputs)" if inputs else "no input images given")
    if output is not None:
        if len(sources) != 1:
            raise UsageError(f"-o names one file but there are {len(sources)} inputs; "
                             "use --out-dir")
        return [(sources[0], check_output(output, tuple(sources), overwrite))]
    label = Path(style).stem
    targets = [(out_dir if out_dir is not None else source.parent) / f"{source.stem}-{label}.png"
               for source in sources]
    for folder in dict.fromkeys(target.parent for target in targets):  # each folder once
        check_writable_folder(folder)
    counts = Counter(targets)
    jobs = []
    for source, target in zip(sources, targets):
        if counts[target] > 1:
            target = target.with_name(f"{source.stem}-{source.suffix[1:].lower()}-{label}.png")
        jobs.append((source, check_output(target, tuple(sources), overwrite, probe_folder=False)))
    if len({t for _, t in jobs}) < len(jobs):  # (a-jpg.png beside a.jpg, say: refuse)
        raise OutputError("two inputs would be written to one output name; give --out-dir "
                          "per folder or rename one of them")
    return jobs


MIN_MASK_SIDE = 4


def load_mask(path: Path) -> mx.array:
    """A mask image as (1, H, W, 1) weights in [0, 1] (its grey level, or its alpha where it has
    one); refused when it is all black."""
    picture = load_image(path)
    weights = picture.alpha if picture.alpha is not None and float(
        mx.min(picture.alpha)) < 1.0 else mx.mean(picture.rgb[0], axis=-1)
    if min(picture.size) < MIN_MASK_SIDE:
        raise ImageError(f"{path}: the mask is {picture.size[0]}x{picture.size[1]}; use one the "
                         "size of the photo")
    if float(mx.max(weights)) <= 1.0 / 255:
        raise ImageError(f"{path}: the mask is all black (it would stylize nothing); white "
                         "marks what to stylize")
    return weights[None, :, :, None]


def fit_mask(mask: mx.array, width: int, height: int, target: Path) -> mx.array:
    """The mask at an image's size: the same size, or the same aspect ratio (resized)."""
    from .io.images import resize_planes

    mask_height, mask_width = mask.shape[1:3]
    if (mask_width, mask_height) == (width, height):
        return mask
    if abs(mask_width / mask_height - width / height) > 0.01 * width / height:
        raise ImageError(f"the mask is {mask_width}x{mask_height} but the photo for "
                         f"{target.name} is {width}x{height}; give a mask of the photo's size "
                         "or aspect ratio")
    planes = resize_planes(np.array(mask[0, :, :, 0]), width, height)
    return mx.clip(mx.array(planes), 0.0, 1.0)[None, :, :, None]


def apply_files(stylizer: Stylizer, jobs: Sequence[Job], max_size: int | None = None,
                batch: int = 8, mask: mx.array | None = None,
                outside: Stylizer | None = None) -> Iterator[Path]:
    """Stylize and save each job; images of one size share a forward pass. Yields outputs.

    With a `mask` ((1, H, W, 1) in [0, 1]), the style lands where it is 1 and the photo stays
    where it is 0, or the `outside` style does."""
    chunk = max(batch * 4, 1)
    for start in range(0, len(jobs), chunk):
        loaded = [(load_image(source, max_size), target) for source, target in
                  jobs[start:start + chunk]]
        by_size = defaultdict(list)
        for picture, target in loaded:
            by_size[picture.size].append((picture, target))
        for group in by_size.values():
            for first in range(0, len(group), batch):
                part = group[first:first + batch]
                photos = mx.concatenate([picture.rgb for picture, _ in part])
                out = stylizer(photos)
                if mask is not None:
                    width, height = part[0][0].size
                    weights = fit_mask(mask, width, height, part[0][1])
                    rest = outside(photos) if outside is not None else photos
                    out = weights * out + (1.0 - weights) * rest
                for index, (picture, target) in enumerate(part):
                    yield save_image(target, out[index:index + 1], picture.alpha)
