"""Fixtures of the weights tests (shared with tests/cli): see ``support.weights_fixtures``."""

from support.weights_fixtures import *  # noqa: F403
