"""Alembic environment for Arbor's schema (see ``arbor.store.migrator``).

:func:`arbor.store.migrate` hands over an open connection in
``config.attributes["connection"]`` and owns the transaction. Without one
(``command.revision(autogenerate=True)``, ``command.check``) an async engine is built from
``sqlalchemy.url``, or SQL is printed offline (``sql=True``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlalchemy.types import TypeDecorator

from arbor.store.engine import create_engine, database_url
from arbor.store.tables import Base

config = context.config
target_metadata = Base.metadata


def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:
    """Write Arbor's column types (``UTCDateTime``) as the plain SQLAlchemy type they wrap,
    so a migration never imports application code that may change later."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def configure_options(connection: Connection) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "compare_server_default": True,
        "render_item": render_item,
        # SQLite alters tables by copying them; Alembic's batch mode does it.
        "render_as_batch": connection.dialect.name == "sqlite",
    }


def run_with(connection: Connection) -> None:
    context.configure(connection=connection, **configure_options(connection))
    with context.begin_transaction():
        context.run_migrations()


async def run_with_new_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_with)
            await conn.commit()
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    url = config.get_main_option("sqlalchemy.url")
    if connection is not None:
        run_with(connection)
    elif url is None:
        raise RuntimeError("no connection given and no sqlalchemy.url set")
    elif context.is_offline_mode():
        context.configure(
            url=database_url(url),
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=database_url(url).get_backend_name() == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_with_new_engine(url))


main()
