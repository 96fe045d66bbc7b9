"""douane: a transparent LLM gateway built on mitmproxy."""

__version__ = "0.1.0"
