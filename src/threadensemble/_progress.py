"""The progress bar of a run, driven only from the calling thread.

``tqdm.update`` is not safe to call from many threads at once (counts can be lost), so workers
never touch the bar: the engine's completion loop, in the calling thread, is its only user.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from ._runtime import gil_enabled

__all__ = ["progress_bar"]


def progress_bar(total: int, initial: int, n_workers: int, enabled: bool) -> Any:
    """Return a tqdm bar over realizations (a silent one when ``enabled`` is False)."""
    gil = "on" if gil_enabled() else "off"
    return tqdm(
        total=total,
        initial=initial,
        desc=f"ensemble [{n_workers} workers, GIL {gil}]",
        unit="real",
        disable=not enabled,
        dynamic_ncols=True,
    )
