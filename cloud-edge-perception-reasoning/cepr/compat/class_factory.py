"""A drop-in for Sedna's ``ClassFactory`` / ``ClassType``, so Ianvs adapter files load without Sedna.

The adapters in ``testalgorithms/`` and ``testenv/`` register their classes and metric functions with
``ClassFactory.register(ClassType.X, alias=...)`` exactly as under Ianvs. When Sedna (the KubeEdge one, installed
with Ianvs from source) is importable, :func:`get_class_factory` returns Sedna's classes and registrations go
there; otherwise they land in this module's registry, which ``cepr run`` reads.
"""

from __future__ import annotations

import typing

from cepr.errors import CeprError, did_you_mean


class ClassType:
    """Same values as ``sedna.common.class_factory.ClassType``."""

    GENERAL = "general"
    HEM = "hard_example_mining"
    CALLBACK = "callback"
    STP = "task_definition"
    MTL = "multi_task_learning"
    UTP = "unseen_task_processing"
    KM = "knowledge_management"
    STAGE = "stage"


class ClassFactory:
    """Registry of classes (and metric functions) by type and alias."""

    __registry__: typing.ClassVar[dict[str, dict[str, object]]] = {}

    @classmethod
    def register(cls, type_name: str = ClassType.GENERAL, alias: str | None = None):
        def decorator(t_cls):
            name = alias if alias is not None else t_cls.__name__
            cls.__registry__.setdefault(type_name, {})[name] = t_cls  # re-registering replaces (module reloads)
            return t_cls
        return decorator

    @classmethod
    def register_cls(cls, t_cls, type_name: str = ClassType.GENERAL, alias: str | None = None):
        return cls.register(type_name, alias)(t_cls)

    @classmethod
    def is_exists(cls, type_name: str, cls_name: str | None = None) -> bool:
        if cls_name is None:
            return type_name in cls.__registry__
        return cls_name in cls.__registry__.get(type_name, {})

    @classmethod
    def get_cls(cls, type_name: str, t_cls_name: str):
        names = cls.__registry__.get(type_name, {})
        if t_cls_name not in names:
            raise CeprError(f"no {type_name} class registered as {t_cls_name!r}" + did_you_mean(t_cls_name, names)
                            + (f" (registered: {', '.join(sorted(names))})" if names else
                               " (nothing registered: is the module's url right?)"))
        return names[t_cls_name]


def sedna_available() -> bool:
    """True when KubeEdge Sedna is importable (PyPI's unrelated ``sedna`` package has no ``sedna.common``)."""
    try:
        import sedna.common.class_factory  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure to import means "no usable Sedna"
        return False
    return True


def get_class_factory():
    """(ClassFactory, ClassType): Sedna's when installed, else cepr's drop-in."""
    if sedna_available():
        from sedna.common.class_factory import ClassFactory as SednaFactory
        from sedna.common.class_factory import ClassType as SednaType

        return SednaFactory, SednaType
    return ClassFactory, ClassType


def lookup(type_name: str, name: str):
    """Find a registered class in whichever factory holds it (Sedna's first when installed)."""
    factory, _ = get_class_factory()
    if factory is not ClassFactory:
        names = getattr(factory, "__registry__", {}).get(type_name, {})
        if name in names:
            return factory.get_cls(type_name, name)
    return ClassFactory.get_cls(type_name, name)


def force_register(t_cls, type_name: str, alias: str):
    """Register under ``alias`` even where Sedna already registered a class of that name (cepr's policies
    replace Sedna's same-named filters, keeping names and parameters but not their crashes)."""
    factory, _ = get_class_factory()
    if factory is not ClassFactory and isinstance(getattr(factory, "__registry__", None), dict):
        factory.__registry__.setdefault(type_name, {})[alias] = t_cls
    else:
        factory.register(type_name, alias)(t_cls)
    if factory is not ClassFactory:
        ClassFactory.register(type_name, alias)(t_cls)
    return t_cls
