"""Progress of a stage: units done / total with rate and ETA (tqdm), resumable counts included."""

from __future__ import annotations

from tqdm.auto import tqdm


def stage_progress(stage: str, total: int, done: int, unit: str, enabled: bool = True) -> tqdm:
    bar = tqdm(total=total, initial=done, desc=f"{stage}", unit=unit, disable=not enabled, dynamic_ncols=True,
               smoothing=0.1)
    if done:
        bar.set_postfix_str(f"{done} resumed")
    return bar
