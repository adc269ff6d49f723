"""Reading a config file (a `cream run` config, a stage's `--config`): YAML that holds a mapping, strictly and in
bounded time and memory, whatever the file holds.

A config is a few KB of settings, so a file is refused, each in one line naming it, when it is larger than
:data:`MAX_BYTES`, nests deeper than :data:`MAX_DEPTH` levels, or holds more than :data:`MAX_NODES` values once
its aliases are expanded. The last rule is what stops a "billion laughs" file — ten anchors each aliasing the
previous one ten times, a few hundred bytes that expand to 10⁹ values — and a recursive alias (``&a [*a]``) before
anything walks, copies or fingerprints the values. A key given twice (which YAML would let the last one win
silently) is a problem too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cream_data.errors import CreamError

MAX_BYTES = 2**20  # 1 MiB
MAX_DEPTH = 32  # a run config nests 4 levels (eval.harness.tasks[i])
MAX_NODES = 100_000  # values after alias expansion (a run config has a few hundred)


def read_mapping(path: Path, problems: list[str], where: str, expected: str) -> dict:
    """A YAML file that holds a mapping (an empty file: an empty one), else one line ``where: got list, expected
    {expected}``; duplicate keys go to ``problems`` (:func:`read_yaml`). A run config and a stage's `--config`."""
    raw = read_yaml(path, problems)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise CreamError(f"{where}: got {type(raw).__name__}, expected {expected}")
    return raw


def kind_of(value) -> str:
    """What a value is, for ``got …``: ``a list``, ``'fast' (str)``, ``5 (int)``."""
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{value!r} ({type(value).__name__})"


def read_yaml(path: Path, problems: list[str]) -> Any:
    """The YAML document of ``path`` within the bounds above (one-line CreamError otherwise); a duplicate key is a
    problem."""
    import yaml

    path = Path(path)
    text = _read_text(path)

    class BoundedLoader(yaml.SafeLoader):  # a SafeLoader: no objects
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise CreamError(f"{path}: line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels; a config "
                                     "is a mapping of sections of settings")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_document(self, node):
            _walk(node, path, problems)
            return super().construct_document(node)

    try:
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as e:
        raise CreamError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:  # not expected within MAX_DEPTH; never a traceback
        raise CreamError(f"{path}: nested too deeply to read") from None


def _read_text(path: Path) -> str:
    """At most MAX_BYTES of UTF-8 text (read bounded: a file that grows, or lies about its size, is no exception)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise CreamError(f"{path}: is a folder, expected a YAML file") from None
    if len(data) > MAX_BYTES:
        try:
            size = f"{path.stat().st_size / 2**20:.1f} MiB"
        except OSError:
            size = "larger"
        raise CreamError(f"{path}: config file is {size}, expected at most {MAX_BYTES // 2**20} MiB (a config holds "
                         "settings, not data: name data files in it instead)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CreamError(f"{path}: not UTF-8 text") from None


def _walk(root, path: Path, problems: list[str]) -> None:
    """Every value of the document as it will be built (aliases expanded), without recursion: more than MAX_NODES
    of them, or nesting deeper than MAX_DEPTH through aliases, is refused; a key given twice in one mapping is a
    problem (each mapping checked once, however often it is aliased)."""
    import yaml

    stack, seen, count = [(root, "", 1)], set(), 0
    while stack:
        node, where, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            why = f"expands to more than {MAX_NODES:,} values" if count > MAX_NODES else \
                f"nests deeper than {MAX_DEPTH} levels"
            raise CreamError(f"{path}: {why} through its aliases (*name); a config is a few settings, so anchors "
                             "and aliases may repeat a value but not multiply it or refer to themselves")
        if isinstance(node, yaml.MappingNode):
            first = id(node) not in seen
            seen.add(id(node))
            keys, children = set(), []
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if first and name is not None and (key.tag, name) in keys:
                    problems.append(f"line {key.start_mark.line + 1}: duplicate key {name!r} "
                                    + (f"in section {where}" if where else "at the top level"))
                keys.add((key.tag, name))
                children += [(key, where, depth + 1), (value, f"{where}.{name}" if where else str(name), depth + 1)]
            stack += reversed(children)  # in document order
        elif isinstance(node, yaml.SequenceNode):
            stack += reversed([(value, f"{where}[{i}]", depth + 1) for i, value in enumerate(node.value)])
