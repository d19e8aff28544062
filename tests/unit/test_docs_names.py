"""The docs name only what exists: every path, every module, class and
function name in backticks, every flag and every make target in README.md
and docs/**/*.md is found in the code, or is on the short lists below of
names that belong to something else (the standard library, RocksDB, the
tools the lab drives, the seed's Java). A renamed class or a dropped flag
then fails here instead of misleading a reader."""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SOURCES = [
    path
    for folder in ("selectorkv", "benchmarks", "docs/tutorial", "tests")
    for path in sorted((ROOT / folder).rglob("*.py"))
    if path != Path(__file__).resolve()  # its own examples of missing names
]
TICKED = re.compile(r"`([^`\n]+)`")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(\(\))?$")
PATH = re.compile(r"(?<![\w/.-])((?:selectorkv|benchmarks|tests|docs|wrk_scripts|lab)/[\w./-]*\w)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])")
MAKE = re.compile(r"(?:`|^ *\$? *)make ([a-z][a-z-]*)", re.M)  # in code, not in prose
FILE_NAME = re.compile(r"\w[\w.-]*\.(py|lua|md|json|png|cfg|toml)")
GENERATED = {"report.md"}  # files the lab writes

# Modules whose attributes a doc may name (``socket.send``, ``gc.freeze()``,
# ``WriteBatch`` through rocksdict): a name found there exists.
LIBRARIES = (
    "builtins", "socket", "select", "selectors", "os", "threading", "queue", "time", "gc",
    "h11", "rocksdict", "concurrent.futures", "asyncio", "http.client", "signal",
)  # fmt: skip
# Names of other systems that the docs compare with or explain.
ELSEWHERE = {
    "one.nio.http.HttpSession", "one.nio.net.Selector", "one.nio.net.Session",
    "one.nio.server.AcceptorThread", "SelectionKey", "Session", "HttpServer",
    "HttpServer.handleRequest",  # the seed's Java
    "CALIBRATE_DELAY_MS",  # wrk2's
    "epoll_wait", "recv_into", "sendall", "socketpair", "SO_LINGER", "TCP_NODELAY",
    "_raw_spin_unlock_irqrestore", "MUST_CLOSE", "Upgrade", "Allow", "Expect",  # kernel, HTTP
    "_write_to_self",  # asyncio's own wake-up channel
    "WriteBatch",  # RocksDB
    "gc_grace_seconds", "max_hint_window",  # Cassandra's settings
    "cpu.max", "cpu.cfs_quota_us",  # cgroup files
    "delay_request", "socket_writeable", "h11_mypyc",  # wrk's Lua hooks, a module name
    "MainThread",  # Python's name for the main thread
}  # fmt: skip
# Flags of the other programs the docs show (curl, wrk, py-spy, git, pip...).
OTHER_FLAGS = {
    "--data-binary", "--raw", "--http1.0", "--limit-rate", "--latency", "--script",
    "--timeout", "--rate",
    "--idle", "--gil", "--threads", "--nonblocking", "--native", "--format",
    "--trace-python-allocators", "--detach", "--count", "--benchmark-only",
    "--benchmark-compare", "--benchmark-autosave", "--cov", "--no-cache-dir",
}  # fmt: skip


@functools.cache
def code_names() -> frozenset[str]:
    """Every name the code defines or assigns, every module's name, and
    every word of its string constants (thread names, metric names)."""
    names: set[str] = set()
    for path in SOURCES:
        names.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.value))
    return frozenset(names)


@functools.cache
def library_names() -> frozenset[str]:
    names: set[str] = set(dir(builtins))
    for name in LIBRARIES:
        module = importlib.import_module(name)
        names.update(dir(module))
        for value in vars(module).values():
            if isinstance(value, type):
                names.update(dir(value))
    return frozenset(names)


def ticked() -> list[tuple[str, str]]:
    return [
        (doc.relative_to(ROOT).as_posix(), match.group(1))
        for doc in DOCS
        for match in TICKED.finditer(doc.read_text())
    ]


def is_code_name(text: str) -> bool:
    """A name a reader would look for in code: dotted, with an underscore,
    in CamelCase, or called; plain words in backticks are values."""
    return bool(IDENTIFIER.match(text)) and bool(
        "." in text or "_" in text or text.endswith("()") or re.search(r"[a-z][A-Z]", text)
        or re.match(r"^[A-Z][a-z]+([A-Z]|$)", text)
    )  # fmt: skip


def missing_name(text: str) -> bool:
    name = text.removesuffix("()")
    if name in ELSEWHERE or name.startswith("one.nio."):
        return False
    last = name.split(".")[-1]
    return last not in code_names() and last not in library_names()


def file_names() -> set[str]:
    return {
        path.name
        for path in ROOT.rglob("*")
        if ".venv" not in path.parts and ".git" not in path.parts
    }


def names_nothing(text: str, files: set[str]) -> bool:
    """Backticked ``text`` is a file name no file has, or a code name that
    neither the code nor a library nor the lists above know."""
    if FILE_NAME.fullmatch(text):
        return text not in files | GENERATED
    if text.startswith(("selectorkv_", "SELECTORKV_")) or text.startswith((".", "-")):
        return False  # metrics and variables: below; file suffixes
    return is_code_name(text) and missing_name(text)


def test_every_code_name_in_backticks_is_in_the_code() -> None:
    files = file_names()
    missing = sorted({f"{doc}: `{text}`" for doc, text in ticked() if names_nothing(text, files)})
    assert not missing, "named in the docs, found nowhere:\n" + "\n".join(missing)


def test_every_path_named_exists() -> None:
    missing = sorted(
        {
            f"{doc.relative_to(ROOT).as_posix()}: {path}"
            for doc in DOCS
            for path in PATH.findall(doc.read_text())
            if not (ROOT / path).exists() and not (ROOT / "selectorkv" / path).exists()
        }
    )
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def metric_exists(name: str, words: frozenset[str]) -> bool:
    """The code writes metric names in parts (``f"selectorkv_peer_{name}_total"``):
    the name exists when its core, or the end of its core, is a word of the code."""
    core = name.removeprefix("selectorkv_")
    parts = re.sub(r"_(total|seconds|bytes)$", "", core).split("_")
    return core in words or any("_".join(parts[i:]) in words for i in range(len(parts)))


def test_every_environment_variable_and_metric_named_exists() -> None:
    from selectorkv.config import OPTIONS

    words = code_names()
    variables = {option.env for option in OPTIONS}
    missing = sorted(
        {
            f"{doc}: `{text}`"
            for doc, text in ticked()
            if IDENTIFIER.match(text)
            and (
                (text.startswith("SELECTORKV_") and text not in variables | words)
                or (text.startswith("selectorkv_") and not metric_exists(text, words))
            )
        }
    )
    assert not missing, "variables and metrics named in the docs, found nowhere:\n" + "\n".join(
        missing
    )


@functools.cache
def code_flags() -> frozenset[str]:
    """Every flag the code defines or passes on: argparse's, the server's
    options (and --no- for the switches), the tools the lab drives."""
    from selectorkv.config import OPTIONS

    found: set[str] = set()
    for path in [*SOURCES, ROOT / "Makefile", ROOT / ".ci" / "run"]:
        found.update(FLAG.findall(path.read_text()))
    for option in OPTIONS:
        found.add(option.flag)
        found.add("--no-" + option.flag.removeprefix("--"))
    return frozenset(found)


def test_every_flag_named_exists() -> None:
    missing = sorted(
        {
            f"{doc.relative_to(ROOT).as_posix()}: {flag}"
            for doc in DOCS
            for flag in FLAG.findall(doc.read_text())
            if flag not in code_flags() and flag not in OTHER_FLAGS
        }
    )
    assert not missing, "flags named in the docs that nothing takes:\n" + "\n".join(missing)


def test_every_make_target_named_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    missing = sorted(
        {
            f"{doc.relative_to(ROOT).as_posix()}: make {target}"
            for doc in DOCS
            for target in MAKE.findall(doc.read_text())
            if target not in targets
        }
    )
    assert not missing, "make targets named in the docs that the Makefile lacks:\n" + "\n".join(
        missing
    )


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("Connection._read", False),
        ("OutboundBuffer", False),
        ("Outbound", True),  # a class's name cut short
        ("NoSuchClassHere", True),
        ("gc.freeze()", False),
    ],
)
def test_the_checker_tells_a_name_that_exists_from_one_that_does_not(
    text: str, missing: bool
) -> None:
    assert is_code_name(text)
    assert missing_name(text) == missing


def test_the_configuration_table_has_every_option_and_only_those() -> None:
    from selectorkv.config import OPTIONS

    table = (ROOT / "docs" / "configuration.md").read_text()
    rows = dict(
        re.findall(
            r"^\| `(--[a-z-]+)`(?: / `--no-[a-z-]+`)? \| `(SELECTORKV_[A-Z_]+)` \|", table, re.M
        )
    )
    assert rows == {option.flag: option.env for option in OPTIONS}
