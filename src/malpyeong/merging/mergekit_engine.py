"""Full-model merges by mergekit's own lazy executor (every method the streaming merger lacks)."""

from __future__ import annotations

from pathlib import Path

from malpyeong.errors import UserError, one_line
from malpyeong.merging.config import MergeConfig, mergekit_dict


def mergekit_merge(
    cfg: MergeConfig,
    out_dir: Path,
    *,
    device: str = "cpu",
    seed: int | None = 0,
    shard_size: int = 5 * 10**9,
    progress: bool = True,
) -> Path:
    """Run mergekit (its lazy, tensor-by-tensor executor) on ``cfg`` into ``out_dir``."""
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
    except ImportError:
        raise UserError(
            "this merge needs mergekit, which is not installed", hint="pip install mergekit"
        ) from None
    from pydantic import ValidationError

    try:
        config = MergeConfiguration.model_validate(mergekit_dict(cfg))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise UserError(
            f"mergekit rejects the config: {first.get('msg')}", file=cfg.source, field=where or None
        ) from None
    itemsize = {"float32": 4, "float64": 8}.get(cfg.out_dtype or cfg.dtype or "", 2)
    options = MergeOptions(
        device=device,
        random_seed=seed,
        lazy_unpickle=True,
        copy_tokenizer=True,
        quiet=not progress,
        write_model_card=True,
        out_shard_size=max(1, shard_size // itemsize),
        safe_serialization=True,
    )
    try:
        run_merge(config, str(out_dir), options=options)
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        raise UserError(f"mergekit failed: {type(err).__name__}: {one_line(err)}", file=cfg.source) from err
    return out_dir
