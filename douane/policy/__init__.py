"""Policy-as-code: pydantic models and the YAML loader."""

from douane.policy.loader import PolicyError, PolicyIssue, load_policy
from douane.policy.model import Policy

__all__ = ["Policy", "PolicyError", "PolicyIssue", "load_policy"]
