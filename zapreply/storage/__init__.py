"""Storage: the tables (`models`, owned by Alembic's migrations), the engines and sessions
(`db`) and the audit trail (`events`). Never imports anything above it."""
