"""Loading a request on the server: the loader, its guards, and hiding the user's own modules.

* :mod:`.loader` -- :class:`Loader`, a program's bindings and definitions as live objects;
* :mod:`.rewrite` -- user code lowered to its guarded form (static refusals at file:line:col);
* :mod:`.guard` -- the run-time checks of attribute reads and writes, one guard per request;
* :mod:`.views` -- read-only views of the server's modules;
* :mod:`.builtins_table` -- the builtins a request's code sees;
* :mod:`.hosted_memory`, :mod:`.tensor_side` -- aliases of the hosted model's memory refused where
  request code reads a callable, and on the tensor side while request code runs;
* :mod:`.native_protocols` -- objects of a request that would name raw memory to numpy;
* :mod:`.blocking` -- :func:`block_user_modules`, for ``remote='local'``;
* :mod:`.errors` -- :class:`LoadError`, :class:`ServerRefusal`, :class:`ServerImportError`.

The rules come from one table shared with the client's checker, :mod:`compiler.access`.
"""
from .blocking import block_user_modules, is_user_module
from .errors import LoadError, ServerImportError, ServerRefusal
from .loader import Loader

__all__ = ["Loader", "LoadError", "ServerRefusal", "ServerImportError", "block_user_modules", "is_user_module"]
