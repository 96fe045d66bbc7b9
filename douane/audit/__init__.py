"""Audit: the record, the batched writer, the store behind the `requests` view."""

from douane.audit.record import COLUMNS, AuditRecord
from douane.audit.store import AuditStore, StoreBusy, open_reader, query
from douane.audit.writer import AuditWriter, WriterHealth

__all__ = ["COLUMNS", "AuditRecord", "AuditStore", "AuditWriter", "StoreBusy", "WriterHealth", "open_reader",
           "query"]
