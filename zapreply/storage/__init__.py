"""Storage: the tables (`models`, owned by Alembic's migrations), the engines and sessions
(`db`), the audit trail (`events`) and the SQL of each aggregate's writes (`inbox`, `runs`,
`outbox`, `daily_usage`). Never imports anything above it."""
