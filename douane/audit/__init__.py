"""Audit: the record, the batched writer, the store behind the `requests` view."""

from douane.audit.record import COLUMNS, AuditRecord
from douane.audit.store import AuditStore, open_reader, query
from douane.audit.writer import AuditWriter

__all__ = ["COLUMNS", "AuditRecord", "AuditStore", "AuditWriter", "open_reader", "query"]
