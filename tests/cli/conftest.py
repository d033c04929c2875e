"""Fixtures of the CLI tests (shared with tests/weights): see ``support.weights_fixtures``."""

from support.weights_fixtures import *  # noqa: F403
