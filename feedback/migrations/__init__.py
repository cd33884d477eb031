"""Alembic migrations of the feedback store (run by :meth:`feedback.store.FeedbackStore.migrate`)."""
