"""Generate Python code for protos/headshots/v1 into headshots/v1 (committed).

`python tools/gen_protos.py` writes into the repository; `--out DIR` writes elsewhere,
which the staleness test uses to compare against what is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import google.api  # the googleapis-common-protos wheel ships the .proto sources
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "headshots" / "v1").glob("*.proto"))


def include_dirs() -> list[Path]:
    googleapis = Path(google.api.__path__[0]).parent.parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    return [PROTO_ROOT, googleapis, well_known]


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc"]
    args += [f"-I{d}" for d in include_dirs()]
    args += [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    # protoc resolves file names against the include path, so run from the proto root.
    import os

    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    for pkg in (out / "headshots", out / "headshots" / "v1"):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from protos/; do not edit (make protos)."""\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    ns = parser.parse_args()
    generate(ns.out)
    print(
        f"generated {len(proto_files())} proto files into {ns.out / 'headshots' / 'v1'}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
