"""django-q2 entry points: thin, idempotent wrappers over ``pool.services``."""

from __future__ import annotations

import logging

from pool import services
from sandboxes.services import pool_sandbox_provision

logger = logging.getLogger(__name__)


def pool_top_up() -> dict[str, int]:
    return services.pool_top_up()


def pool_provision(sandbox_id: str) -> bool:
    return pool_sandbox_provision(sandbox_id)


def pool_maintain() -> dict[str, int]:
    counts = services.pool_maintain()
    if counts:
        logger.info("pool maintenance: %s", counts)
    return counts
