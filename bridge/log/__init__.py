"""The session log: record kinds, the durable SQLite writer, readers, recovery, take sheets
and the export formats (see docs/architecture.md, "The session log and its exports")."""
