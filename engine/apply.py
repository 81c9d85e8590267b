"""Applying a style to files: outputs planned and checked up front, same-size images batched."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import mlx.core as mx

from .errors import OutputError, UsageError
from .image import check_output, find_images, load_image, save_image
from .stylize import Stylizer

Job = tuple[Path, Path]  # (input, output)


def plan_outputs(inputs: Sequence[Path], style: str, output: Path | None, out_dir: Path | None,
                 overwrite: bool = False) -> list[Job]:
    """Expand folders, name every output, and refuse unsafe ones before any work is done."""
    sources: list[Path] = []
    for item in inputs:
        sources.extend(find_images(item) if Path(item).is_dir() else [Path(item)])
    if not sources:
        raise UsageError("no input images given")
    if output is not None:
        if len(sources) != 1:
            raise UsageError(f"-o names one file but there are {len(sources)} inputs; "
                             "use --out-dir")
        return [(sources[0], check_output(output, tuple(sources), overwrite))]
    if out_dir is not None and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: the output folder does not exist; create it first")
    label = Path(style).stem
    jobs = []
    for source in sources:
        folder = out_dir if out_dir is not None else source.parent
        target = folder / f"{source.stem}-{label}.png"
        jobs.append((source, check_output(target, tuple(sources), overwrite)))
    return jobs


def apply_files(stylizer: Stylizer, jobs: Sequence[Job], max_size: int | None = None,
                batch: int = 8) -> Iterator[Path]:
    """Stylize and save each job; images of one size share a forward pass. Yields outputs."""
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
                out = stylizer(mx.concatenate([picture.rgb for picture, _ in part]))
                for index, (picture, target) in enumerate(part):
                    yield save_image(target, out[index:index + 1], picture.alpha)
