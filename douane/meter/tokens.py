"""Token estimates made before a call, settled later from the provider's usage.

tiktoken would need its BPE files downloaded at run time, which this deployment cannot do, and it
only knows OpenAI's tokenizers anyway. The estimate is the common rule of thumb: one token per
four characters of text, plus a few tokens of framing per message. It errs high on code and low
on some non-Latin scripts; the settlement from real usage corrects every counter afterwards.
"""

from __future__ import annotations

from douane.providers import CanonicalRequest

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_input_tokens(request: CanonicalRequest | None, body_bytes: int = 0) -> int:
    if request is None:
        return max(1, body_bytes // CHARS_PER_TOKEN)
    chars = sum(len(p.text) for p in request.text_parts())
    return max(1, -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages))
