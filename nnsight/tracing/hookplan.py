"""Which modules an execution must patch: only those its interventions can touch.

The frontend records in the IR the static envoy chains of a program's code
(``Program.envoys``: ``model.transformer.h[0].output`` → ``model.transformer.h.0``),
the names used in ways it cannot follow (``Program.dynamic_names``) and whether the
code needs every module (``Program.dynamic``); the runtime reads only those, so a
server decides from the IR alone. Patching only the named modules makes a
trace's cost scale with what it touches, not with the model's size. Whenever
that is not provably safe — a model name used dynamically (``h[i]``, passed to
a function, iterated), a user-defined callable that might reach the model
through its globals, code that is not a known program, or a feature that needs
every module (``.cache()``, ``.source``) — every module is patched, as before.
"""
import os
import sysconfig
import types
import weakref
from typing import Any, Dict, List, Optional, Tuple

from compiler.fallbacks import FALLBACKS, reason_of
from compiler.frontend.accesses import AccessReport
from runtime import claims, registries

_LIBRARY_DIRS = tuple(
    os.path.normpath(p) + os.sep
    for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")} if p
)
_opaque_cache: Dict[Any, bool] = {}  # code object -> is it user code; at most OPAQUE_BOUND entries
OPAQUE_BOUND = 4096


def _report(compiled):
    """The program's access report, read from its IR once per compiled program (None: patch everything)."""
    report = compiled._accesses
    if report is None:
        return None
    if report is False:  # not read yet
        report = compiled._accesses = AccessReport.from_program(compiled.program)
    return report


def _user_code(code) -> bool:
    hit = _opaque_cache.get(code)
    if hit is None:
        filename = os.path.normpath(os.path.abspath(code.co_filename))
        hit = not filename.startswith(_LIBRARY_DIRS) and not filename.startswith(_OWN_DIRS)
        if len(_opaque_cache) >= OPAQUE_BOUND:
            _opaque_cache.clear()
        _opaque_cache[code] = hit
    return hit


# Weak keys: a class defined in a trace body holds the trace's globals (the model) through its
# methods, so a strong cache entry would keep every such model alive.
_type_cache: "weakref.WeakKeyDictionary[type, bool]" = weakref.WeakKeyDictionary()


def _user_type(cls: type) -> bool:
    hit = _type_cache.get(cls)
    if hit is None:
        module = getattr(cls, "__module__", "") or ""
        hit = module == "__main__" or not _importable_library(module)
        _type_cache[cls] = hit
    return hit


def _opaque(value: Any, depth: int = 0) -> bool:
    """Could ``value`` reach a model in ways the static plan can't see?

    True for user-defined functions, classes, modules and instances (their code may
    read a model through globals or attributes), and for containers holding such
    things or envoys (``for layer in layers: layer.output``).
    """
    Envoy = _envoy_types()[0]

    if isinstance(value, (types.FunctionType, types.MethodType)):
        code = getattr(value, "__code__", None) or getattr(getattr(value, "__func__", None), "__code__", None)
        return code is not None and _user_code(code)
    if isinstance(value, type):
        return _user_type(value)
    if isinstance(value, types.ModuleType):
        filename = getattr(value, "__file__", None)
        return filename is not None and not os.path.normpath(os.path.abspath(filename)).startswith(
            _LIBRARY_DIRS + _OWN_DIRS)
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if depth > 2:
            return True
        items = value.values() if isinstance(value, dict) else value
        for i, item in enumerate(items):
            if i >= 256 or isinstance(item, Envoy) or _opaque(item, depth + 1):
                return True
        return False
    return _user_type(type(value))


def _importable_library(module: str) -> bool:
    import sys

    mod = sys.modules.get(module.split(".")[0])
    filename = getattr(mod, "__file__", None)
    if filename is None:
        return module in sys.builtin_module_names
    return os.path.normpath(os.path.abspath(filename)).startswith(_LIBRARY_DIRS + _OWN_DIRS)


def _own_dirs() -> Tuple[str, ...]:
    import compiler
    import nnsight
    import runtime

    return tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (nnsight, runtime, compiler))


_OWN_DIRS = _own_dirs()


# Names every program namespace has (builtins, the claim helper, ...): never models.
_INTERNAL_NAMES = frozenset(("__builtins__", "__name__", "__nnsight_claimed__", "__file__", "__doc__"))
# Library types whose instances can't reach a model (tensors, numbers, strings...): learned as
# values are classified, so a trace's namespace is usually checked with one set lookup per name.
_SAFE_TYPES: set = {int, float, bool, str, bytes, type(None)}
SAFE_TYPES_BOUND = 4096  # (library types only, so this is never reached in practice)


def _model_names(model, ns: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Names in ``ns`` bound to envoys of ``model``; None if some value makes the plan unsafe."""
    Envoy, EnvoySource, OperationEnvoy = _envoy_types()
    roots: Dict[str, Any] = {}
    safe = _SAFE_TYPES
    for name, value in ns.items():
        cls = type(value)
        if cls in safe or name in _INTERNAL_NAMES:
            continue
        if isinstance(value, Envoy):
            if value._interleaver is model._interleaver:
                roots[name] = value
        elif isinstance(value, (OperationEnvoy, EnvoySource)) or _opaque(value):
            return None  # (a `.source` operation bound outside the trace: its module must run patched)
        elif not isinstance(value, (list, tuple, set, frozenset, dict, type, types.ModuleType,
                                    types.FunctionType, types.MethodType)):
            if len(safe) < SAFE_TYPES_BOUND:
                safe.add(cls)  # a library type (user types are opaque): its instances never need a look
    return roots


_ENVOY_TYPES: list = []
TREE_VERSION = [0]  # replaced by nnsight.envoy.TREE_VERSION on first use


def _envoy_types():
    """(Envoy, EnvoySource, OperationEnvoy), imported once (nnsight.envoy imports this package)."""
    if not _ENVOY_TYPES:
        from ..envoy import Envoy
        from ..source import EnvoySource, OperationEnvoy

        _ENVOY_TYPES.extend((Envoy, EnvoySource, OperationEnvoy))
        global TREE_VERSION
        from ..envoy import TREE_VERSION
    return _ENVOY_TYPES


def modules_to_patch(model, mediators) -> Optional[List[Tuple[str, Any]]]:
    """``(path, module)`` pairs to patch for these mediators, or None for "all of them"."""
    Envoy = (_ENVOY_TYPES or _envoy_types())[0]
    unit_for_code = claims.unit_for_code
    plans = []  # (access report, model names of that mediator's namespace)
    names_of: Dict[int, Dict[str, Any]] = {}
    key: List[Any] = [TREE_VERSION[0]]  # the tree version, then per plan: report id, (name, envoy id)...
    for mediator in mediators:
        owner = unit_for_code(mediator.code)
        if owner is None:
            return None
        report = _report(owner.program)
        if report is None:
            return None
        ns = mediator.namespace
        roots = names_of.get(id(ns))
        if roots is None:
            roots = _model_names(model, ns)
            if roots is None:
                return None
            names_of[id(ns)] = roots
        own = getattr(mediator, "bindings", None)  # an invoke's own values of names (loop variables)
        if own:
            extra = _model_names(model, own)
            if extra is None:
                return None
            roots = {**roots, **extra}
        plans.append((report, roots))
        key.append(id(report))
        for name, envoy in roots.items():
            key.append(name)
            key.append(id(envoy))
        key.append(None)
    key = tuple(key)
    # The (path, module) list of this plan, kept by the model itself (so it dies with the model):
    # checked against the reports it was made for, whose ids are in the key.
    resolved = model.__dict__.get("_resolved_plans")
    if resolved is None:
        resolved = model.__dict__["_resolved_plans"] = {}
    hit = resolved.get(key)
    if hit is not None:
        reports = hit[0]
        for i, plan in enumerate(plans):
            if reports[i] is not plan[0]:
                break
        else:
            return hit[1]
    pairs = _targets(plans, Envoy)  # None (dynamic: patch everything) is remembered too
    if len(resolved) > 256:
        resolved.clear()
    resolved[key] = (tuple(report for report, _ in plans), pairs)
    return pairs


def _targets(plans, Envoy) -> Optional[List[Tuple[str, Any]]]:
    """The ``(path, module)`` pairs the programs' static chains name, or None when dynamic."""
    envoys = _resolve(plans, Envoy)
    if envoys is _DYNAMIC:
        return None
    return [(envoy.path, envoy._module) for envoy in envoys]


_DYNAMIC = ()


def _resolve(plans, Envoy) -> Any:
    """The envoys the programs' static chains name (in first-use order), or _DYNAMIC."""
    envoys: List[Any] = []
    seen = set()
    for report, roots in plans:
        if report.dynamic_for(roots):
            FALLBACKS.note("hookplan.dynamic", "a chain the frontend could not follow statically")
            return _DYNAMIC
        for root, segments, _terminal in report.chains:
            envoy = roots.get(root)
            if envoy is None:
                continue
            for segment in segments:
                try:
                    envoy = envoy[int(segment)] if segment.lstrip("-").isdigit() else getattr(envoy, segment)
                except Exception as exc:
                    FALLBACKS.note("hookplan.dynamic", f"{root}.{'.'.join(segments)}: {reason_of(exc)}")
                    return _DYNAMIC
                if not isinstance(envoy, Envoy):
                    FALLBACKS.note("hookplan.dynamic", f"{root}.{'.'.join(segments)} is not a module")
                    return _DYNAMIC
            if id(envoy) not in seen:
                seen.add(id(envoy))
                envoys.append(envoy)
    return envoys


registries.track("nnsight.tracing.hookplan.opaque_codes", lambda: len(_opaque_cache), OPAQUE_BOUND)
registries.track("nnsight.tracing.hookplan.user_types", lambda: len(_type_cache), None)
registries.track("nnsight.tracing.hookplan.safe_types", lambda: len(_SAFE_TYPES), SAFE_TYPES_BOUND)
