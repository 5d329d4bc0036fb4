"""Small Trio helpers shared by the data path."""

from typing import NoReturn

import trio


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups, or [exc] itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def raise_single(group: BaseExceptionGroup) -> NoReturn:
    """Re-raises the one exception that matters from an internal nursery's group.

    Nurseries are strict, so a task that failed arrives wrapped together with the
    Cancelled of its siblings. Internal nurseries should not leak groups to callers that
    catch specific errors: the first non-Cancelled error wins; a group of only Cancelled
    re-raises one Cancelled so the cancel scope that caused it can catch it.
    """
    found = leaves(group)
    for exc in found:
        if not isinstance(exc, trio.Cancelled):
            raise exc
    raise found[0]
