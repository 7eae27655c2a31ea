"""The progress bar of a run, driven only from the calling thread.

``tqdm.update`` is not safe to call from many threads at once (counts can be lost), so workers
never touch the bar: the engine's completion loop, in the calling thread, is its only user.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int, initial: int, workers: str, enabled: bool) -> Any:
    """Return a tqdm bar over realizations (a silent one when ``enabled`` is False).

    ``workers`` says who computes, as the engine's backend describes itself (``4 workers, GIL
    off``, ``dask, 16 threads``).
    """
    return tqdm(
        total=total,
        initial=initial,
        desc=f"ensemble [{workers}]",
        unit="real",
        disable=not enabled,
        dynamic_ncols=True,
    )
