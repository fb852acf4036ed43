r"""User objects named by import path: ``"package.module:qualname"`` specs, and the
fingerprint of the source they come from.

A sweep (:class:`xpo_sim.sweep.RunConfig`) is pure data, so a researcher's own instance
family, algorithm, policy class or oracle enters it as a *spec*: the dotted name of an
importable module, a colon, and the object's (possibly dotted) qualified name inside it,
e.g. ``"mylab.algos:MyXPO"`` or ``"mylab.envs:Factory.build"``. :func:`resolve` imports the
module and returns the object; it runs wherever the spec is used (in the coordinating
process to validate a config, and again inside every worker that runs it), so the same
spec works under serial, fork, forkserver and spawn process pools and on dask workers
alike — provided the module is **importable by every one of those processes**: on their
``sys.path`` (``PYTHONPATH``, the current folder of a local pool started from it) or
installed (``pip install -e .`` of the user's project). A spawn or forkserver pool's
workers get the coordinating process's ``sys.path`` when they start; a remote dask
worker needs the module on its own machine. ``__main__`` is never importable by a worker
and is refused.

Every module resolved here is fingerprinted: :func:`module_digest` is the SHA-256 of the
bytes of its source file *as executed in this process*. When the file on disk changes
after the module was imported, the next :func:`resolve` re-executes the module in place
from the new bytes (as :func:`importlib.reload` does, without Python's bytecode cache), so
a long-lived worker never runs stale code under a fresh fingerprint. Only the file of the
module a spec names is fingerprinted, not the modules it imports.

Errors are ``ValueError`` s that say what is wrong: a malformed spec, a module that cannot
be imported (with the importability rule above), a missing attribute, or an object of the
wrong kind.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import threading
from pathlib import Path

__all__ = ["SPEC_FORM", "is_spec", "split", "resolve", "module_digest", "fingerprint", "parse_fingerprint"]

SPEC_FORM = "'package.module:qualname' (e.g. 'mylab.algos:MyXPO')"
"""How a spec is written, as the error messages show it."""

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_SPEC = re.compile(rf"(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<qualname>{_IDENT}(?:\.{_IDENT})*)")

_LOADED: dict[str, tuple[str, str]] = {}  # module name → (source path, SHA-256 of the bytes it runs)
_LOCK = threading.RLock()  # dask runs tasks in threads: one (re)load at a time


def is_spec(value) -> bool:
    """Whether ``value`` is meant as a spec (a string with a colon); it may still be malformed."""
    return isinstance(value, str) and ":" in value


def split(spec, what: str = "spec") -> tuple[str, str]:
    """(module name, qualified name) of ``spec``; ``ValueError`` naming ``what`` if malformed."""
    match = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"{what} must be a built-in name or a spec {SPEC_FORM}, got {spec!r}")
    return match["module"], match["qualname"]


def _source_path(module) -> Path | None:
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or getattr(module, "__file__", None)
    if not origin:
        return None
    path = Path(origin)
    return path if path.is_file() else None


def _import(name: str, what: str, spec: str):
    if name in ("__main__", "__mp_main__"):
        raise ValueError(f"{what} {spec!r} names __main__, which the sweep's worker processes cannot import: "
                         f"move it into a module of its own, importable by every worker (on PYTHONPATH, or installed)")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ValueError(f"{what} {spec!r}: no module named {missing!r}; the module must be importable by the "
                             f"coordinating process and by every worker (on their sys.path, e.g. PYTHONPATH, or "
                             f"installed)") from None
        raise ValueError(f"{what} {spec!r}: importing module {name!r} failed: {type(err).__name__}: {err}") from err
    except Exception as err:  # noqa: BLE001 - an error inside the user's module
        raise ValueError(f"{what} {spec!r}: importing module {name!r} failed: {type(err).__name__}: {err}") from err


def _load(name: str, what: str, spec: str):
    """The module ``name``, executed from the current bytes of its source file."""
    with _LOCK:
        module = _import(name, what, spec)
        path = _source_path(module)
        if path is None:
            raise ValueError(f"{what} {spec!r}: module {name!r} has no source file, so the results it makes "
                             f"could not be tied to its code; define the object in a module file")
        source = path.read_bytes()
        digest = hashlib.sha256(source).hexdigest()
        known = _LOADED.get(name)
        if known is None or known[0] != str(path):
            _LOADED[name] = (str(path), digest)  # first use here: the import just read this file
        elif known[1] != digest:  # the file changed since this process executed it
            if path.suffix != ".py":
                raise ValueError(f"{what} {spec!r}: module {name!r} ({path}) changed on disk after this process "
                                 f"loaded it and cannot be re-executed; restart the process")
            try:
                exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - reload from those bytes
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"{what} {spec!r}: re-executing the changed module {name!r} failed: "
                                 f"{type(err).__name__}: {err}") from err
            _LOADED[name] = (str(path), digest)
        return module


def resolve(spec: str, what: str = "spec", *, subclass_of: type | None = None, callable_: bool = True):
    """The object ``spec`` (``"package.module:qualname"``) names, imported (or re-executed,
    when its file changed) in this process.

    ``what`` names the argument in messages (e.g. ``"algorithm"``). ``subclass_of``: the
    object must be a class derived from it; otherwise, with ``callable_``, it must be
    callable. ``ValueError`` for a malformed spec, a module that cannot be imported, a
    missing attribute or an object of the wrong kind.
    """
    module_name, qualname = split(spec, what)
    obj = _load(module_name, what, spec)
    for i, part in enumerate(qualname.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = module_name + "".join("." + p for p in qualname.split(".")[:i])
            raise ValueError(f"{what} {spec!r}: {where!r} has no attribute {part!r}") from None
    if subclass_of is not None:
        if not (isinstance(obj, type) and issubclass(obj, subclass_of)):
            raise ValueError(f"{what} {spec!r} must name a subclass of {subclass_of.__module__}."
                             f"{subclass_of.__qualname__}, got {obj!r}")
    elif callable_ and not callable(obj):
        raise ValueError(f"{what} {spec!r} must name a callable (a function or a class), got {obj!r}")
    return obj


def module_digest(module_name: str) -> str:
    """SHA-256 (hex) of the source this process runs for ``module_name``, a module
    resolved here before (``KeyError`` otherwise)."""
    return _LOADED[module_name][1]


def fingerprint(specs) -> str:
    """The code fingerprint of the user modules that ``specs`` name (built-in names and
    None are skipped): ``"module=sha256;…"``, sorted by module, ``""`` when there are
    none. Each module is resolved first (see :func:`resolve`), so the digests are those
    of the code this process runs."""
    modules = {}
    for spec in specs:
        if is_spec(spec):
            name = split(spec)[0]
            _load(name, "spec", spec)
            modules[name] = module_digest(name)
    return ";".join(f"{name}={digest}" for name, digest in sorted(modules.items()))


def parse_fingerprint(text) -> dict[str, str]:
    """The module → digest map of a :func:`fingerprint` string (``{}`` for ``""``)."""
    if not isinstance(text, str) or not text:
        return {}
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)

