"""Fixtures of the CLI tests (shared with tests/weights): see ``support.weights_fixtures``."""

from support.weights_fixtures import (  # noqa: F401 (fixtures)
    _one_thread,
    env,
    fast_retries,
    hub,
    random_model_file,
    repo_folder,
)
