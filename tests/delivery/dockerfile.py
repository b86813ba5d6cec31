"""A small Dockerfile reader: instructions with continuations joined, so tests check structure, not substrings."""

import json
import shlex
from pathlib import Path


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, backslash continuations joined."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if stripped.endswith("\\"):
            continue
        keyword, _, arguments = pending.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    return result


def last(path: Path, keyword: str) -> str:
    return [arguments for name, arguments in instructions(path) if name == keyword][-1]


def exec_form(arguments: str) -> list[str]:
    return json.loads(arguments)


def pip_requirements(path: Path) -> list[str]:
    """Every requirement the RUN instructions hand to `pip install` (options and `.` left out)."""
    requirements = []
    for name, arguments in instructions(path):
        if name != "RUN":
            continue
        for command in arguments.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                requirements += [w for w in words[2:] if not w.startswith("-") and w != "."]
    return requirements
