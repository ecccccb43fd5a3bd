"""One registry per plug-in kind (dispatch policies, cloud backends, edge reasoners, metrics).

A :class:`Registry` maps names to plug-ins (classes or functions) and to what each declares it can or needs to do,
its *capabilities*. Plug-ins arrive three ways:

* by decorator, where they are defined::

      @POLICY_REGISTRY.register("MyPolicy", needs_edge_result=True)
      class MyPolicy(Policy): ...

* lazily, as a ``"package.module:Attribute"`` target that is imported only when the plug-in is chosen, so that
  ``import cepr`` never pulls in torch, openai or fastapi::

      BACKEND_REGISTRY.add_lazy("openai", "cepr.cloud.openai_backend:OpenAIBackend", config_model=...)

* from another installed package, through the entry-point group ``cepr.<kind>`` (e.g. ``cepr.policies``)::

      [project.entry-points."cepr.policies"]
      MyPolicy = "my_package.policy:MyPolicy"

  Entry points are read on the first lookup of a name cepr does not know, and on the first listing. A plug-in's
  capabilities come from its own ``register`` call, which runs when its module is imported; an entry point may
  also name just a module (``"my_package.policy"``) that registers the name when imported. Names cepr already
  has win over entry points of the same name (with a warning).

Unknown names raise :class:`~cepr.errors.CeprError` with a "did you mean" and the list of names.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from cepr.errors import CeprError, did_you_mean, unknown

T = TypeVar("T")
_UNLOADED: Any = object()


def import_target(target: str):
    """The object a ``"package.module:Attribute"`` target names (``Attribute`` may be dotted); a bare
    ``"package.module"`` is the module itself."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def _spelling(obj) -> str | None:
    """``module:qualname`` of a class or function, as a lazy target would spell it."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else None


@dataclass
class Entry:
    """One registered plug-in. ``target`` is set for lazy and entry-point plug-ins until they are imported."""

    name: str
    obj: Any = _UNLOADED
    target: str | None = None
    capabilities: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    origin: str = ""  # empty for cepr's own; "entry point of <distribution>" for a plug-in package's

    @property
    def loaded(self) -> bool:
        return self.obj is not _UNLOADED


class Registry(Generic[T]):
    """Names -> plug-ins of one kind.

    ``kind`` is plural and names the entry-point group (``cepr.<kind>``) and the list in error messages; ``what``
    is the singular in messages ("unknown dispatch policy 'x'"); ``capabilities`` lists every capability a
    plug-in of this kind may declare, with its default (a misspelt one is an error at registration)."""

    def __init__(self, kind: str, what: str, capabilities: Mapping[str, Any] | None = None):
        self.kind = kind
        self.what = what
        self.group = f"cepr.{kind}"
        self.defaults = dict(capabilities or {})
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}  # alias -> canonical name
        self._lock = threading.RLock()
        self._discovered = False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    # ---- adding -------------------------------------------------------------------------------------------

    def register(self, name: str, *, aliases: tuple[str, ...] | list[str] = (),
                 **capabilities) -> Callable[[T], T]:
        """Decorator: register the class or function under ``name`` (and ``aliases``) with its capabilities."""
        caps = self._check_capabilities(name, capabilities)

        def decorator(obj: T) -> T:
            self._add(Entry(name, obj, capabilities=caps, aliases=tuple(aliases)))
            return obj
        return decorator

    def add_lazy(self, name: str, target: str, *, aliases: tuple[str, ...] | list[str] = (),
                 **capabilities) -> None:
        """Register ``"package.module:Attribute"`` under ``name`` without importing it; :meth:`get` imports it."""
        if not isinstance(target, str) or not target.partition(":")[0]:
            raise CeprError(f"{self.what} {name!r}: a lazy target is 'package.module:Attribute', got {target!r}")
        self._add(Entry(name, target=target, capabilities=self._check_capabilities(name, capabilities),
                        aliases=tuple(aliases)))

    def unregister(self, name: str) -> None:
        """Remove a plug-in and its aliases (tests; a plug-in that replaces another)."""
        with self._lock:
            entry = self._entries.pop(self._canonical(name))
            for a in entry.aliases:
                self._aliases.pop(a, None)

    def _check_capabilities(self, name: str, capabilities: dict) -> dict:
        for k in capabilities:
            if k not in self.defaults:
                raise CeprError(f"{self.what} {name!r}: "
                                + unknown("capability", k, self.defaults, listing=f"{self.kind} declare"))
        return dict(capabilities)

    def _add(self, entry: Entry) -> None:
        with self._lock:
            for n in (entry.name, *entry.aliases):
                taken = self._canonical(n, missing=None)
                if taken is None:
                    continue
                old = self._entries[taken]
                if taken != entry.name or not self._same(old, entry):
                    raise CeprError(f"{self.what} {n!r} is already registered"
                                    + (f" ({old.origin})" if old.origin else "")
                                    + f"; {_spelling(entry.obj) or entry.target} cannot take the name too")
            old = self._entries.get(entry.name)
            if old is not None:  # a lazy or entry-point target registering itself on import, or a module reload
                entry.capabilities = {**old.capabilities, **entry.capabilities}
                entry.aliases = tuple(dict.fromkeys(old.aliases + entry.aliases))
                entry.origin = entry.origin or old.origin
                for a in old.aliases:
                    self._aliases.pop(a, None)
            self._entries[entry.name] = entry
            for a in entry.aliases:
                self._aliases[a] = entry.name

    @staticmethod
    def _same(old: Entry, new: Entry) -> bool:
        """Whether ``new`` is ``old`` registered again (the object a lazy target names, or a reloaded module)."""
        if old.loaded and new.loaded:
            return old.obj is new.obj or _spelling(old.obj) == _spelling(new.obj)
        if not old.loaded and new.loaded:
            target = old.target or ""
            return ":" not in target or target == _spelling(new.obj)  # a bare module registers its own names
        return old.target == new.target

    # ---- looking up ---------------------------------------------------------------------------------------

    def _canonical(self, name, missing: Any = KeyError):
        with self._lock:
            if isinstance(name, str):
                if name in self._entries:
                    return name
                if name in self._aliases:
                    return self._aliases[name]
        if missing is KeyError:
            raise KeyError(name)
        return missing

    def _entry(self, name) -> Entry:
        """The entry of ``name`` or an alias, reading entry points on a miss; else the "did you mean" error."""
        canonical = self._canonical(name, missing=None)
        if canonical is None:
            self.discover(again=True)
            canonical = self._canonical(name, missing=None)
        if canonical is None:
            msg = f"unknown {self.what} {name!r}" + did_you_mean(name, self.names(aliases=True))
            raise CeprError(f"{msg} ({self.kind}: {', '.join(self.names()) or 'none'})")
        return self._entries[canonical]

    def __contains__(self, name) -> bool:
        if self._canonical(name, missing=None) is not None:
            return True
        self.discover(again=True)
        return self._canonical(name, missing=None) is not None

    def canonical(self, name: str) -> str:
        """The name ``name`` is an alias of (itself for a registered name)."""
        return self._entry(name).name

    def get(self, name: str) -> T:
        """The plug-in called ``name`` (or an alias), imported now if it was registered lazily."""
        entry = self._entry(name)
        if entry.loaded:
            return entry.obj
        target = entry.target or ""
        try:
            obj = import_target(target)
        except Exception as e:  # whatever a plug-in's import raises, say which plug-in it was
            source = f"{target}, {entry.origin}" if entry.origin else target
            raise CeprError(f"{self.what} {entry.name!r} ({source}) failed to import: {type(e).__name__}: {e}") \
                from e
        with self._lock:
            current = self._entries.get(entry.name)
            if current is not None and current.loaded:  # its module registered it while being imported
                return current.obj
            if ":" not in target:
                raise CeprError(f"{self.what} {entry.name!r}: importing {target} ({entry.origin or 'lazy target'}) "
                                f"registered no {self.what} of that name")
            entry.obj, entry.target = obj, None
            return obj

    def names(self, aliases: bool = False) -> list[str]:
        """Every registered name, in registration order (entry-point plug-ins last); ``aliases`` adds the aliases."""
        self.discover()
        with self._lock:
            out = list(self._entries)
            if aliases:
                out += list(self._aliases)
        return out

    def capabilities(self, name: str) -> dict:
        """What plug-in ``name`` declared, over the kind's defaults. A lazy built-in is not imported for this; an
        entry-point plug-in is (its capabilities come from its own ``register`` call)."""
        entry = self._entry(name)
        if entry.origin and not entry.loaded:
            self.get(name)
            entry = self._entry(name)
        return {**self.defaults, **entry.capabilities}

    def capabilities_of(self, obj) -> dict:
        """The capabilities of a plug-in found by the object itself (as Sedna's ClassFactory hands it over, under
        whatever name): its own entry, else that of the nearest registered base class, else the defaults."""
        candidates = list(getattr(obj, "__mro__", None) or (obj,))
        with self._lock:
            entries = list(self._entries.values())
        for cand in candidates:
            spelt = _spelling(cand)
            for e in entries:
                if (e.obj is cand) if e.loaded else (e.target is not None and e.target == spelt):
                    return {**self.defaults, **e.capabilities}
        return dict(self.defaults)

    # ---- entry points -------------------------------------------------------------------------------------

    def discover(self, again: bool = False) -> None:
        """Read the ``cepr.<kind>`` entry points of installed packages (once; ``again`` re-reads them). Nothing is
        imported: each becomes a lazy entry, imported when it is chosen."""
        if self._discovered and not again:
            return

        self._discovered = True
        for ep in entry_points(group=self.group):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
            origin = f"entry point of {dist}"
            with self._lock:
                taken = self._canonical(ep.name, missing=None)
                if taken is not None:
                    old = self._entries[taken]
                    if old.origin != origin and (old.target or _spelling(old.obj)) != ep.value:
                        warnings.warn(f"{origin} adds {self.what} {ep.name!r} ({ep.value}), which is already "
                                      f"registered{' (' + old.origin + ')' if old.origin else ''}; ignored",
                                      RuntimeWarning, stacklevel=2)
                    continue
                self._entries[ep.name] = Entry(ep.name, target=ep.value, origin=origin)

    # ---- views --------------------------------------------------------------------------------------------

    def view(self) -> RegistryView:
        """A read-only mapping name -> plug-in over this registry (for code that wants a dict)."""
        return RegistryView(self)


class RegistryView(Mapping):
    """``name -> plug-in`` over a registry's registered names (not the aliases); values are imported on access."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, name):
        if name not in self._registry.names():
            raise KeyError(name)
        return self._registry.get(name)

    def __contains__(self, name) -> bool:
        return name in self._registry.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.names())

    def __len__(self) -> int:
        return len(self._registry.names())

    def __repr__(self) -> str:
        return f"<{self._registry.kind}: {', '.join(self._registry.names())}>"


# ---- plug-in files, imported by path as Ianvs imports module files ----------------------------------------

def import_module_file(path) -> None:
    """Ianvs imports module files by basename with their folder on sys.path; do the same."""
    path = Path(path)
    if not path.is_file():
        raise CeprError(f"module file {path} does not exist")
    folder, name = str(path.parent), path.stem
    if folder not in sys.path:
        sys.path.insert(0, folder)
    existing = sys.modules.get(name)
    if existing is not None:
        if Path(getattr(existing, "__file__", "") or "").resolve() != path.resolve():
            raise CeprError(f"two module files share the basename {name!r} ({existing.__file__} and {path}); "
                            "Ianvs imports by basename, so each adapter/metric file needs a unique name")
        return
    try:
        importlib.import_module(name)
    except CeprError:
        raise
    except Exception as e:
        raise CeprError(f"importing {path} failed: {type(e).__name__}: {e}") from e


def load_plugins(kind: str, files) -> None:
    """Import plug-in files (``plugins: [./my_backend.py]``) so what they register (a cloud backend, an edge
    reasoner) can be named by the next hyperparameters; each file is imported once, by path, as Ianvs imports
    module files. Plug-ins packaged with entry points need no such line."""

    if files in (None, "", []):
        return
    for f in [files] if isinstance(files, str) else list(files):
        path = Path(str(f)).expanduser()
        if not path.is_file():
            raise CeprError(f"{kind}: plugin file {str(f)!r} not found (relative paths resolve against the current "
                            f"directory {Path.cwd()})")
        import_module_file(path.resolve())
