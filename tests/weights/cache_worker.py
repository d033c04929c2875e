"""A process that loads one upstream weight into the zoo cache (driven by test_cache_concurrency.py).

``python cache_worker.py URL PREFIX READY_FILE GO_FILE DELAY``: imports, touches READY_FILE, waits for
GO_FILE, sleeps DELAY seconds, then fetches (download + hash + convert + cache) and loads the result;
prints the SHA-256 of the cached file. Any exception is a non-zero exit with its traceback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from zoo.weights.io import load_state_dict_file, sha256_file
from zoo.weights.sources import fetch_url

if __name__ == "__main__":
    url, prefix, ready, go, delay = sys.argv[1:6]
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    time.sleep(float(delay))
    path = fetch_url(url, fmt="official", arch="mobilenet_v2", sha256_prefix=prefix)
    load_state_dict_file(path)
    print(sha256_file(path))
