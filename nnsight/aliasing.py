"""Module aliases: ``NNsight(model, rename={...})`` gives modules extra names.

    model = LanguageModel(path, rename={".transformer.h": ".layers",   # mount a deep path at the root
                                        "attn": "attention",            # rename wherever it appears
                                        ".transformer": ["tf", "body"]}) # several aliases for one path
    model.layers[0].attention        # the same envoy as model.transformer.h[0].attn

A key starting with ``.`` is a path from the root; any other key is matched
from every envoy of the tree (so ``"attn"`` renames the ``attn`` of every
block). A key may also be a module class (``{GPT2Attention: "attention"}``): the alias is bound
on every envoy with exactly one child of that class (several such children are refused: an alias
names one module; key those by name). Two keys binding one alias to different modules on the same
envoy are refused. An alias is a name (its leading ``.`` is optional) bound on the envoy
the key was resolved from; a dotted alias (``"transformer.layers"``) is bound
on the envoy its prefix names. Aliases are extra names for the same envoys:
paths, providers and iteration are unchanged.
"""
import contextlib
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

Rename = Dict[Union[str, type], Union[str, Iterable[str]]]


class Aliaser:
    """The ``rename`` mapping of a model and the bindings it made."""

    def __init__(self, rename: Rename) -> None:
        self.rename: Dict[Union[str, type], List[str]] = {
            key: [aliases] if isinstance(aliases, str) else list(aliases) for key, aliases in rename.items()}
        self.alias_to_name: Dict[str, str] = {}  # full alias path -> full original path
        self.name_to_aliases: Dict[str, List[str]] = {}
        self._bound_by: Dict[tuple, object] = {}  # (mount path, alias) -> the key that bound it

    def build(self, root) -> None:
        """Bind every alias on the tree under ``root`` (again after the tree changed)."""
        self.alias_to_name.clear()
        self.name_to_aliases.clear()
        self._bound_by.clear()
        for _, envoy in root.named_modules():
            envoy._aliases.clear()
        for key, aliases in self.rename.items():
            if isinstance(key, type):
                self._bind_class(root, key, aliases)
                continue
            anchors = [root] if key.startswith(".") else [e for _, e in root.named_modules()]
            for anchor in anchors:
                target = _resolve(anchor, key.lstrip("."))
                if target is None:
                    continue
                for alias in aliases:
                    self._bind(anchor, alias, target, key)

    def _bind_class(self, root, key: type, aliases: List[str]) -> None:
        """A class key: bind on each envoy whose children hold exactly one module of that class."""
        for _, anchor in root.named_modules():
            matches = [(name, child) for name, child in anchor._children.items() if isinstance(child._module, key)]
            if len(matches) > 1:
                names = ", ".join(name for name, _ in matches)
                raise ValueError(
                    f"`rename` key {key.__name__} matches {len(matches)} modules under `{anchor.path}` "
                    f"({names}); an alias names one module, so a class key binds only where it matches "
                    f"one. Key those modules by name instead (e.g. {{'.{_relative(root, anchor, matches[0][0])}': ...}}).")
            if matches:
                for alias in aliases:
                    self._bind(anchor, alias, matches[0][1], key)

    def _bind(self, anchor, alias: str, target, key) -> None:
        parts = alias.lstrip(".").split(".")
        mount = _resolve(anchor, ".".join(parts[:-1])) if len(parts) > 1 else anchor
        if mount is None:
            raise ValueError(f"`rename` alias {alias!r} for {_key_text(key)}: `{anchor.path}` has no "
                             f"{'.'.join(parts[:-1])!r} to mount it on.")
        name = parts[-1]
        if name in mount._children and mount._children[name] is not target:
            raise ValueError(f"`rename` alias {alias!r} for {_key_text(key)} would hide the module "
                             f"`{mount.path}.{name}`. Pick a different alias.")
        if any(name in vars(c) for c in type(mount).__mro__):
            raise ValueError(f"`rename` alias {alias!r} for {_key_text(key)} would hide the envoy attribute "
                             f"`{name}`. Pick a different alias.")
        previous = mount._aliases.get(name)
        if previous is not None and previous is not target:
            raise ValueError(
                f"`rename` alias {alias!r} for {_key_text(key)} conflicts with the same alias for "
                f"{_key_text(self._bound_by[(mount.path, name)])} on `{mount.path}`: one name can't "
                f"stand for two modules (`{previous.path}` and `{target.path}`). Pick different aliases.")
        self._bound_by[(mount.path, name)] = key
        mount._aliases[name] = target
        full = f"{mount.path}.{name}"
        self.alias_to_name[full] = target.path
        self.name_to_aliases.setdefault(target.path, []).append(full)


def _key_text(key) -> str:
    return key.__name__ if isinstance(key, type) else repr(key)


def _relative(root, anchor, name: str) -> str:
    path = f"{anchor.path}.{name}"
    return path[len(root.path) + 1:] if path.startswith(root.path + ".") else path


def _resolve(envoy, path: str):
    """The descendant envoy at a dotted path (children and aliases), or None."""
    if not path:
        return envoy
    for part in path.split("."):
        children = envoy._children
        if part in children:
            envoy = children[part]
        elif part in envoy._aliases:
            envoy = envoy._aliases[part]
        elif part.lstrip("-").isdigit() and -len(children) <= int(part) < len(children):
            envoy = list(children.values())[int(part)]
        else:
            return None
    return envoy


def bind(root, rename: Optional[Rename]) -> Optional[Aliaser]:
    """Attach ``rename`` aliases to the tree of ``root``; returns the Aliaser (None without rename)."""
    if not rename:
        return None
    aliaser = Aliaser(rename)
    aliaser.build(root)
    if not aliaser.alias_to_name:
        warnings.warn(f"`rename` {rename!r} matched no module of {type(root._module).__name__}.", stacklevel=3)
    return aliaser


@contextlib.contextmanager
def applied(root, rename: Optional[Rename]) -> Iterator[Any]:
    """``root`` with the ``rename`` aliases of a client's model for the ``with`` body, then its own.

    A server hosts one model for many clients, each with its own ``rename=``.
    """
    if not rename:
        yield root
        return
    own = root.__dict__.get("_alias")
    root.__dict__["_alias"] = bind(root, rename)
    try:
        yield root
    finally:
        root.__dict__["_alias"] = own
        if own is not None:
            own.build(root)
        else:
            for _, envoy in root.named_modules():
                envoy._aliases.clear()


# ---------------------------------------------------------------------- printing

def _indent(text: str, spaces: int = 2) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0]] + [" " * spaces + line for line in lines[1:]])


def envoy_repr(envoy) -> str:
    """Like ``repr(module)``, built from the envoy tree: aliases show next to their module."""
    module = envoy._module
    if not envoy._children and not envoy._aliases:
        return repr(module)
    name = type(module).__name__
    try:
        extra = module.extra_repr()
    except Exception:
        extra = ""
    children = envoy._children
    aliases = envoy._aliases
    by_target: Dict[int, List[str]] = {}
    for alias, target in aliases.items():
        by_target.setdefault(id(target), []).append(alias)
    lines = extra.split("\n") if extra else []
    entries = []  # (name, aliases, text) per child
    for child_name, child in children.items():
        entries.append((child_name, by_target.pop(id(child), None), _indent(envoy_repr(child))))
    lines += _child_lines(entries, compress=_is_module_list(module))
    for alias, target in aliases.items():
        if id(target) in by_target and alias in by_target[id(target)]:
            lines.append(f"({alias}): -> {target.path}")
    if not children and not lines:
        return f"{name}()"
    if not children:
        return f"{name}({extra})"
    return name + "(\n  " + "\n  ".join(lines) + "\n)"


def _is_module_list(module) -> bool:
    import torch

    return isinstance(module, torch.nn.ModuleList)


def _child_lines(entries: list, compress: bool) -> List[str]:
    """``(name): repr`` per child; a ModuleList's runs of identical children print once, as torch
    prints them: ``(0-2): 3 x Block(...)`` (a child with an alias is never folded into a run)."""
    lines = []
    i = 0
    while i < len(entries):
        name, aliases, text = entries[i]
        j = i + 1
        if compress and not aliases:
            while j < len(entries) and not entries[j][1] and entries[j][2] == text:
                j += 1
        if j - i > 1:
            lines.append(f"({name}-{entries[j - 1][0]}): {j - i} x {text}")
        else:
            label = f"({name})" + (" [" + ", ".join(aliases) + "]" if aliases else "")
            lines.append(f"{label}: {text}")
        i = j
    return lines
