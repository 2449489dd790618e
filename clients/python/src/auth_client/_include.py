"""Where this package keeps `auth/v1/access.proto`, for other services' `protoc -I`.

Its own module, so that `auth_client/__init__.py` can export it without importing `auth_client.protoc`
(which `python -m auth_client.protoc` must be the first to run).
"""

from __future__ import annotations

from pathlib import Path


def include_dir() -> str:
    """The directory to pass to `protoc -I` so that `import "auth/v1/access.proto";` resolves.

    It holds `auth/v1/access.proto`, byte-identical to the auth service's contract of this version
    (scripts/gen-protos copies it there and `--check` fails when it differs).
    """
    return str(Path(__file__).resolve().parent / "proto")
