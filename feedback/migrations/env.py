"""Alembic's environment: migrate on the connection :meth:`FeedbackStore.migrate` hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from feedback.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
