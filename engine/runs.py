"""What every training run (a style, a generator) shares: the rules for its name and files,
and the check that its weights are worth writing."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .errors import EngineError, UsageError


def check_new_name(name: str, kind: str, target: Path, checkpoint: Path, resume: bool,
                   overwrite: bool, catalog=None) -> bool:
    """A run may write `target` (the style or generator file) and its run folder: refused when
    that would replace a user's earlier work or take a name that a plugin (a shipped style)
    holds, unless --resume or --overwrite asks for it. Returns whether the new file overrides
    a plugin's entry of that name (`--overwrite` on a taken name)."""
    if resume and overwrite:
        raise UsageError("--resume continues a run and --overwrite starts it over; give one")
    owner = catalog.owner(name) if catalog is not None else None
    if owner is not None and not getattr(owner.item, "from_user", False):
        if not overwrite:
            raise UsageError(f"{name!r} is the name of {owner.kind_name(kind)} of plugin "
                             f"{owner.plugin!r}; choose another --name, or add --overwrite to "
                             f"make your {kind} the one {name!r} means")
        return True
    if resume or overwrite:
        return bool(owner is not None and getattr(owner.item, "overrides", False))
    if checkpoint.is_file():
        raise UsageError(f"a run named {name!r} exists ({checkpoint}); --resume continues it, "
                         "--overwrite starts it over, or choose another --name")
    if target.is_file():
        raise UsageError(f"your {kind} {name!r} exists ({target}); choose another --name, or "
                         "add --overwrite to replace it")
    return False


def all_finite(*trees) -> bool:
    """Whether every array in the trees (a network's parameters, say) is finite."""
    flat = [v for tree in trees for _, v in tree_flatten(tree) if isinstance(v, mx.array)]
    return all(mx.all(mx.isfinite(v)).item() for v in flat
               if mx.issubdtype(v.dtype, mx.floating))


def diverged(step: int, saved: int | None, checkpoint: Path) -> EngineError:
    kept = (f"the last finite checkpoint (step {saved}) is kept: --resume continues from it"
            if saved is not None else "nothing was written")
    return EngineError(f"training diverged at step {step} (a loss or weight is not finite); "
                       f"{kept}; lower --learning-rate or --style-weight")
