"""The adversarial suite: every way issue 9 found to get past douane, as tests that must now hold.

It drives real `douane run` processes like the e2e suite, with the same fixtures."""

from tests.e2e.conftest import certs, douane, make_douane, mock, received, redis_url  # noqa: F401
