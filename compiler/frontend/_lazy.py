"""``libcst`` imported on first use (the fast path of the frontend never needs it)."""
import importlib


class LazyModule:
    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__dict__["_name"])
        value = getattr(module, attr)
        self.__dict__[attr] = value  # later lookups skip __getattr__
        return value


libcst = LazyModule("libcst")
