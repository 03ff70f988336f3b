"""The intervention IR: nodes, versioning, text and binary encodings."""
from . import errors  # noqa: F401
from .binary import decode, encode  # noqa: F401
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
    DEF_KINDS,
    DEF_LOCAL,
    DEF_MODULE,
    DEF_STATEMENT,
    FACT_BACKWARD,
    FACT_INVOKE,
    FACT_LOCAL,
    UNIT_FACTS,
    UNIT_BLOCK,
    UNIT_TRACE,
    Binding,
    CodeUnit,
    Definition,
    Header,
    Program,
    SourceLoc,
)
from .parser import parse_program  # noqa: F401
from .printer import print_program  # noqa: F401
from .values import decode_value, encode_value  # noqa: F401
from .verifier import verify  # noqa: F401
from .limits import DecodeLimits  # noqa: F401
from .version import IR_VERSION  # noqa: F401
