"""Thread limits for the numeric libraries, without searching the process for them each time.

``threadpoolctl.threadpool_limits`` walks every shared library loaded in the
process on each call, holding the GIL (10-40 ms in the app, which has loaded
Textual, Arrow and scikit-learn). Per-batch statistics set a limit on every
call, so the libraries are found once and the limits set through that one
controller.
"""

from __future__ import annotations

from functools import cache

from threadpoolctl import ThreadpoolController


@cache
def thread_controller() -> ThreadpoolController:
    """The BLAS/OpenMP libraries of this process, found on first use."""
    return ThreadpoolController()


def limit_threads(limits: int, user_api: str | None = None):
    """Context manager: at most ``limits`` threads in each library of ``user_api`` ("blas", "openmp"; None: both)."""
    return thread_controller().limit(limits=limits, user_api=user_api)
