"""Operating douane: metrics, the admin endpoint (/metrics, /healthz, /readyz) and what they read.

Nothing here runs unless `douane run --admin-port` asks for it; the hot path then only adds to
counters (douane.ops.metrics)."""
