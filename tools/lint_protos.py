"""`buf lint` over a descriptor set built by protoc, so google/api imports need no network."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_protos import PROTO_ROOT, ROOT, include_dirs, proto_files


def buf_binary() -> str:
    return str(Path(sys.executable).parent / "buf")


def lint(proto_root: Path = PROTO_ROOT) -> subprocess.CompletedProcess[str]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "protos.binpb"
        files = [
            str(p.relative_to(proto_root))
            for p in sorted((proto_root / "headshots" / "v1").glob("*.proto"))
        ]
        incs = [f"-I{proto_root}", *[f"-I{d}" for d in include_dirs()[1:]]]
        rc = protoc.main(
            [
                "protoc",
                *incs,
                "--include_imports",
                "--include_source_info",
                f"--descriptor_set_out={image}",
                *[str(proto_root / f) for f in files],
            ]
        )
        if rc != 0:
            return subprocess.CompletedProcess(["protoc"], rc, "", "protoc failed")
        return subprocess.run(
            [
                buf_binary(),
                "lint",
                str(image),
                "--path",
                "headshots/v1",
                "--config",
                str(ROOT / "buf.yaml"),
            ],
            capture_output=True,
            text=True,
        )


def main() -> None:
    result = lint()
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode == 0:
        print(f"buf lint: {len(proto_files())} files clean")
    raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
