"""Generate the code of your own protos that declare `(auth.v1.access)` rules: `python -m auth_client.protoc`.

A service protected by the guard writes its access rules next to its RPCs:

    import "auth/v1/access.proto";
    rpc ListOrders(ListOrdersRequest) returns (ListOrdersResponse) {
      option (auth.v1.access) = {authenticated: true};
    }

and generates its Python code with this module instead of plain `grpc_tools.protoc`, same arguments:

    python -m auth_client.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. protos/x/v1/orders.proto

What it adds to grpcio-tools' protoc, and why:
- `-I include_dir()`: `auth/v1/access.proto` as this package ships it (a byte-identical copy of the
  contract, kept so by scripts/gen-protos), then protobuf's own `google/protobuf/*.proto`.
- One rewrite of what protoc wrote for `--python_out`, `--pyi_out` and `--grpc_python_out`: protoc
  imports the dependency by its proto path, `from auth.v1 import access_pb2`, a module nobody installs.
  It becomes `from auth_client.gen.auth.v1 import access_pb2`, the module this package ships, whose
  import registers `auth/v1/access.proto` and its option extension in protobuf's default pool; so the
  service's own descriptors load, and the guard can read their rules. It is the same rewrite
  scripts/gen-protos makes for the package itself (no sys.path trick, grpc issues #19730, #32177).
  Other plugins' outputs are passed through untouched.

Build systems that call protoc themselves (buf, Bazel, Make) do the same two things: add `include_dir()`
to the include path and apply `rewrite_imports` (a sed of `^from auth\\.v1 import ` to
`from auth_client.gen.auth.v1 import `) to the generated Python.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from auth_client._include import include_dir

# The generated outputs whose imports are rewritten; protoc itself names them so.
REWRITTEN_OUTPUTS = ("--python_out", "--pyi_out", "--grpc_python_out")
SHIPPED_PACKAGE = "auth_client.gen.auth.v1"
__all__ = ["REWRITTEN_OUTPUTS", "SHIPPED_PACKAGE", "include_dir", "main", "rewrite_imports"]

# `from auth.v1 import x_pb2`, `from auth.v1.x_pb2 import *` (protoc's `import public`), `import auth.v1.x_pb2`.
_AUTH_IMPORT = re.compile(r"^(from|import) auth\.v1(?=[ .])", re.MULTILINE)
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")


def rewrite_imports(source: str) -> str:
    """Generated Python (or .pyi) with its `auth.v1` imports pointed at the modules this package ships."""
    return _AUTH_IMPORT.sub(lambda match: f"{match.group(1)} {SHIPPED_PACKAGE}", source)


def _grpc_tools_include() -> str:
    import grpc_tools  # imported here: grpcio-tools is needed to build, not to run

    return str(Path(grpc_tools.__file__).resolve().parent / "_proto")


def _stage_outputs(args: Sequence[str], staging: Path) -> tuple[list[str], list[tuple[Path, Path]]]:
    """`args` with each rewritten output sent to its own staging directory, and (staged, real) pairs.

    protoc then writes into empty directories only, so exactly the files it generated are rewritten and
    copied to where the caller asked, never anything else that lives in an output directory like `.`.
    """
    staged_args: list[str] = []
    moves: list[tuple[Path, Path]] = []
    rest = iter(args)
    for arg in rest:
        flag, equals, value = arg.partition("=")
        if flag not in REWRITTEN_OUTPUTS:
            staged_args.append(arg)
            continue
        if not equals:  # protoc also takes "--python_out DIR"
            value = next(rest, "")
        # protoc's own split: "OPTIONS:DIR" or "DIR" (a Windows drive letter is not an option).
        if ":" in value and not _WINDOWS_PATH.match(value):
            options, colon, target = value.partition(":")
        else:
            options, colon, target = "", "", value
        if target.endswith((".zip", ".jar")):
            raise ValueError(f"{flag}={value}: archive outputs are not supported, give a directory")
        if not Path(target).is_dir():
            raise ValueError(f"{flag}: {target}: no such directory")
        stage = staging / str(len(moves))
        stage.mkdir()
        moves.append((stage, Path(target)))
        staged_args.append(f"{flag}={options}{colon}{stage}")
    return staged_args, moves


def main(argv: Sequence[str] | None = None) -> int:
    """Run protoc with `argv` (sys.argv[1:] by default) as described above; protoc's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from grpc_tools import protoc
    except ImportError:
        print("auth_client.protoc needs grpcio-tools: pip install 'auth-service-client[protoc]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="auth_client_protoc_") as staging:
        try:
            staged_args, moves = _stage_outputs(args, Path(staging))
        except ValueError as error:
            print(f"auth_client.protoc: {error}", file=sys.stderr)
            return 2
        # The caller's include paths come first, so their own files win; ours only fill in what is missing.
        command = ["grpc_tools.protoc", *staged_args, f"-I{include_dir()}", f"-I{_grpc_tools_include()}"]
        code = int(protoc.main(command))
        if code != 0:
            return code  # nothing copied: a failed run leaves the real outputs as they were
        for stage, target in moves:
            for generated in sorted(stage.rglob("*")):
                if not generated.is_file():
                    continue
                destination = target / generated.relative_to(stage)
                destination.parent.mkdir(parents=True, exist_ok=True)
                if generated.suffix in (".py", ".pyi"):
                    destination.write_text(rewrite_imports(generated.read_text(encoding="utf-8")), encoding="utf-8")
                else:
                    shutil.copyfile(generated, destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
