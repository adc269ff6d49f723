"""Reading a config file (a `cream run` config, a stage's `--config`, the config.yaml a run saved): YAML that holds a
mapping, strictly and in bounded time and memory, whatever the file holds.

A config is a few KB of settings, so a file is refused, each in one line naming it, when it is not a regular file (a
folder, a named pipe, a device: checked before it is opened, which for a pipe would block), is larger than
:data:`MAX_BYTES`, nests deeper than :data:`MAX_DEPTH` levels, holds more than :data:`MAX_NODES` values once its
aliases are expanded, or an integer longer than :data:`MAX_DIGITS` digits (which Python refuses to convert). The
node rule is what stops a "billion laughs" file — ten anchors each aliasing the previous one ten times, a few
hundred bytes that expand to 10⁹ values — and a recursive alias (``&a [*a]``) before anything walks, copies or
fingerprints the values. A key given twice (which YAML would let the last one win silently) is a problem too.

Here in cream_data, below cream_train: `cream run` (cream_train/run/config.py), every stage's `--config`
(cli/options.py) and `cream publish` (:func:`read_saved_config`) read configs through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cream_data.errors import CreamError
from cream_data.jsonfile import require_file
from cream_data.settings import joined, shown

MAX_BYTES = 2**20  # 1 MiB
MAX_DEPTH = 32  # a run config nests 4 levels (eval.harness.tasks[i])
MAX_NODES = 100_000  # values after alias expansion (a run config has a few hundred)
MAX_DIGITS = 4000  # an integer's digits (Python converts at most 4300; a 64-bit integer has 19)


def read_mapping(path: Path, problems: list[str], where: str, expected: str) -> dict:
    """A YAML file that holds a mapping (an empty file: an empty one), else one line ``where: got list, expected
    {expected}``; duplicate keys go to ``problems`` (:func:`read_yaml`). A run config and a stage's `--config`."""
    raw = read_yaml(path, problems)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise CreamError(f"{where}: got {type(raw).__name__}, expected {expected}")
    return raw


def read_saved_config(path: Path) -> dict | None:
    """The settings a run saved in ``RUN/config.yaml`` (what `cream publish` puts in a dataset card), read within the
    bounds above; None when there is no such file. Anything else wrong with it is one CreamError naming the file: not
    a regular file, too large or deep, not YAML, a key given twice, a document that is not a mapping."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    problems: list[str] = []
    raw = read_mapping(path, problems, str(path), "a mapping of settings (a run's config.yaml)")
    if problems:
        raise CreamError(f"{path}: " + joined(problems))
    return raw


def kind_of(value) -> str:
    """What a value is, for ``got …``: ``a list``, ``'fast' (str)``, ``5 (int)`` (a long one shortened:
    :func:`cream_data.settings.shown`)."""
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{shown(value)} ({type(value).__name__})"


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

        def construct_object(self, node, deep=False):  # a scalar YAML matches but Python cannot build: 2024-13-45
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, TypeError, AttributeError) as e:
                raise CreamError(f"{path}: line {node.start_mark.line + 1}: {shown(node.value)} is not a valid "
                                 f"{node.tag.rsplit(':', 1)[-1]} ({str(e).split(';')[0]})") from None

    try:
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.YAMLError as e:
        raise CreamError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:  # not expected within MAX_DEPTH; never a traceback
        raise CreamError(f"{path}: nested too deeply to read") from None


def _read_text(path: Path) -> str:
    """At most MAX_BYTES of UTF-8 text (read bounded: a file that grows, or lies about its size, is no exception),
    from a regular file only (asked before opening it: opening a named pipe blocks, a device never ends)."""
    require_file(path, "a YAML file")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
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
    of them, nesting deeper than MAX_DEPTH through aliases, or an integer of more than MAX_DIGITS digits is refused;
    a key given twice in one mapping is a problem (each mapping checked once, however often it is aliased)."""
    import yaml

    stack, seen, nodes, count = [(root, "", 1)], set(), set(), 0
    while stack:
        node, where, depth = stack.pop()
        count += 1
        nodes.add(id(node))
        if count > MAX_NODES and len(nodes) == count:  # no alias: the file itself is that large
            raise CreamError(f"{path}: holds more than {MAX_NODES:,} values; a config is a few settings (name data "
                             "files in it instead)")
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
                    problems.append(f"line {key.start_mark.line + 1}: duplicate key {shown(name)} "
                                    + (f"in section {shown(where, quote=False)}" if where else "at the top level"))
                keys.add((key.tag, name))
                children += [(key, where, depth + 1), (value, f"{where}.{name}" if where else str(name), depth + 1)]
            stack += reversed(children)  # in document order
        elif isinstance(node, yaml.SequenceNode):
            stack += reversed([(value, f"{where}[{i}]", depth + 1) for i, value in enumerate(node.value)])
        elif node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_DIGITS:
            raise CreamError(f"{path}: line {node.start_mark.line + 1}: {shown(where or 'a value', quote=False)}: "
                             f"an integer of {len(node.value):,} digits, expected at most {MAX_DIGITS:,}")
