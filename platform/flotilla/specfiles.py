"""Where a spec file named in a call or in another spec is: the one rule every spec path follows.

A relative path is looked up **next to the spec that names it** (a sweep's ``base:``, a job's
``spec:``), or in the current directory when a person names it (``flotilla.train("my.yaml")``,
``flotilla train my.yaml``). Where nothing is there, it is looked up among the **shipped specs**
(``jobs/*.yaml``, ``tuning/*.yaml`` of the checkout flotilla runs from), by path
(``jobs/face_family.yaml``) or by bare name (``face_family``): so a shipped spec copied elsewhere
keeps finding its base, and a notebook anywhere can say ``flotilla.train("face_family")``.

The shipped specs travel with the source checkout, not inside the package: the layout keeps
``jobs/`` and ``tuning/`` at the top level (the design card), and flotilla is installed from a
checkout (``pip install -e .``). A copy installed any other way finds none, and the error says so.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml

from flotilla.errors import SpecError

MAX_YAML_VALUES = 10_000
"""The most values (scalars, lists, mappings) a YAML document may hold once its aliases are expanded.

The shipped specs hold about 200. An alias bomb (10 nested anchors, each repeating the last ten
times, in 3 KB) expands to 10**10: ``yaml.safe_load`` builds it, shared, in a blink, but anything
that walks it — validation, an error message quoting it, a JSON dump — runs out of time or memory.
"""

SpecKind = Literal["family", "sweep", "job"]
_FOLDER: dict[SpecKind, str] = {"family": "jobs", "sweep": "tuning", "job": "jobs"}
_SUFFIXES = (".yaml", ".yml")


def checkout_root() -> Path | None:
    """The source checkout this flotilla runs from (``<root>/platform/flotilla``), or None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "platform" / "flotilla").is_dir() else None


def shipped_specs(kind: SpecKind) -> list[Path]:
    """The shipped specs of ``kind``: ``tuning/*.yaml`` for sweeps; in ``jobs/``, the family specs
    (no ``kind:`` key) or the job specs (with one)."""
    root = checkout_root()
    if root is None:
        return []
    found = sorted(p for p in (root / _FOLDER[kind]).glob("*.y*ml") if p.suffix in _SUFFIXES)
    if kind == "sweep":
        return found
    return [p for p in found if _is_job(p) == (kind == "job")]


def safe_yaml(text: str, source: str = "YAML") -> Any:
    """``yaml.safe_load(text)``, refusing a document whose aliases expand to more than :data:`MAX_YAML_VALUES`
    values, or refer to themselves, before anything is built from it (``yaml.YAMLError`` for bad syntax)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded(node, {}, set()) > MAX_YAML_VALUES:
            raise SpecError(
                f"{source}: its anchors and aliases (&name / *name) expand to more than {MAX_YAML_VALUES:,} values",
                hint="a spec needs far fewer: write the values out, or repeat a block with fewer nested aliases",
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (each node counted once per use)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise SpecError("YAML: an alias refers to the block it is inside (a recursive structure)", hint="remove the alias")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        total += _expanded(child, sizes, open_)
        if total > MAX_YAML_VALUES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def _is_job(path: Path) -> bool:
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, SpecError):
        return False
    return isinstance(data, dict) and "kind" in data


def _shipped(name: Path, kind: SpecKind) -> Path | None:
    root = checkout_root()
    if root is None or name.is_absolute() or ".." in name.parts:
        return None
    folder = root / _FOLDER[kind]
    candidates = [root / name, folder / name] + [folder / f"{name}{s}" for s in _SUFFIXES if not name.suffix]
    return next((c for c in candidates if c.is_file()), None)


def describe_shipped(kind: SpecKind) -> str:
    """``face_family (jobs/face_family.yaml), ...``: what a hint offers instead of a missing spec."""
    root = checkout_root()
    specs = shipped_specs(kind)
    if root is None or not specs:
        return "none: this flotilla was not installed from a source checkout, so give the spec's path"
    return ", ".join(f"{p.stem} ({p.relative_to(root).as_posix()})" for p in specs)


def resolve_spec_path(name: str | Path, kind: SpecKind, *, relative_to: Path | None = None, what: str | None = None) -> Path:
    """The file ``name`` means: itself when absolute; else ``relative_to / name`` (the folder of the
    spec that names it; the current directory when None) when it exists; else the shipped spec of
    that path or name. A SpecError names where it looked and lists the shipped specs."""
    path = Path(name).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise SpecError(f"{what or kind + ' spec'} {name} does not exist")
        return path
    where = relative_to if relative_to is not None else Path.cwd()
    if (where / path).exists():  # a directory too: the spec loader says what is wrong with it
        return path if relative_to is None else where / path  # as the person wrote it, for the messages
    shipped = _shipped(path, kind)
    if shipped is not None:
        return shipped
    siblings = sorted(x.name for x in (where / path).parent.glob("*.y*ml")) if (where / path).parent.is_dir() else []
    close = difflib.get_close_matches(path.name, siblings, n=1)
    names = ", ".join(p.stem for p in shipped_specs(kind)) or "none"
    if not close:  # a misspelled shipped spec: offer it by the name that was tried
        close = difflib.get_close_matches(path.stem, [p.stem for p in shipped_specs(kind)], n=1)
        close = [f"{close[0]}{path.suffix}"] if close else []
    maybe = f" (did you mean {(path.parent / close[0]).as_posix()}?)" if close else ""
    context = "the current directory" if relative_to is None else f"{where}, the folder of the spec that names it"
    raise SpecError(
        f"{what or kind + ' spec'} {name} does not exist under {where}{maybe}, nor is it a shipped {kind} spec ({names})",
        hint=f"a relative path is resolved against {context}, then among the shipped {kind} specs: {describe_shipped(kind)}",
    )
