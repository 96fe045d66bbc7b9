"""What a stage decides about a call, independent of the transport that carried it.

A stage returns a Block (or None to let the call go on); the transport turns it into an answer in
the provider's shape: an HTTP error response, an SSE error event, or a WebSocket error frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from douane.call import Call


@dataclass(frozen=True, slots=True)
class Block:
    status: int
    rule: str  # e.g. "pii.block", "teams.support.models", "fail.closed"
    message: str  # what happened and what to do, for the caller
    always: bool = False  # enforced in monitor mode too (limits, failures, unreadable input)
    headers: dict[str, str] | None = None  # e.g. retry-after

    @property
    def client_message(self) -> str:
        return f"douane blocked this request: {self.message} [rule: {self.rule}]"


def decide(call: Call, block: Block, enforcing: bool) -> bool:
    """Record the block on the call; True when it is to be enforced. In monitor mode only what would
    have happened is recorded (unless the block is `always`)."""
    if not enforcing and not block.always:
        call.note(f"monitor: would block ({block.rule}): {block.message}")
        return False
    call.decision = "blocked"
    call.note(block.rule)
    return True


def refuse(call: Call, block: Block, enforcing: bool) -> bool:
    """A call refused before it left: `decide`, and when enforced, nothing was sent anywhere (a
    route may have been chosen). True when the block is enforced."""
    if not decide(call, block, enforcing):
        return False
    call.upstream = call.served_by = None
    return True


def withhold(call: Call, block: Block) -> None:
    """An answer replaced by the block before the client got any of it."""
    call.decision = "blocked"
    call.note(block.rule)
    call.response_body = None
    call.status = block.status
