"""The intervention IR: nodes, versioning, text and binary encodings."""
from .nodes import (  # noqa: F401
    BIND_BUILTIN,
    BIND_CLASS,
    BIND_FUNCTION,
    BIND_MODEL,
    BIND_MODULE,
    BIND_OBJECT,
    BIND_RUNTIME,
    BIND_TRACER,
    BIND_VALUE,
    BINDING_KINDS,
    UNIT_BLOCK,
    UNIT_TRACE,
    Binding,
    CodeUnit,
    Definition,
    Header,
    Program,
    SourceLoc,
)
from .version import IR_VERSION  # noqa: F401
