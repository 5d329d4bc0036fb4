"""Small Trio helpers shared by the data path."""

from typing import NoReturn

import trio


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def raise_single(group: BaseExceptionGroup) -> NoReturn:
    """Re-raises the one exception that matters from an internal nursery's group.

    Nurseries are strict, so a task that failed arrives wrapped together with the
    Cancelled of its siblings. Internal nurseries should not leak groups to callers that
    catch specific errors: the first non-Cancelled error wins; a group of only Cancelled
    re-raises one Cancelled so the cancel scope that caused it can catch it.
    """
    leaves = _leaves(group)
    for exc in leaves:
        if not isinstance(exc, trio.Cancelled):
            raise exc
    raise leaves[0]
