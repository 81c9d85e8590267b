"""Applying a style to files: outputs planned and checked up front, same-size images batched."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import mlx.core as mx

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
