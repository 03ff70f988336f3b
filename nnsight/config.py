"""User configuration: ``from nnsight import CONFIG``.

``CONFIG.APP`` holds behaviour switches, ``CONFIG.API`` the remote service::

    CONFIG.APP.DEBUG           show nnsight's internal frames in tracebacks      (NNSIGHT_DEBUG)
    CONFIG.APP.CROSS_INVOKER   invokes of one trace share variables               (NNSIGHT_CROSS_INVOKER)
    CONFIG.APP.PYMOUNT         ``obj.save()`` on every object (read at import)    (NNSIGHT_PYMOUNT)
    CONFIG.APP.REMOTE_LOGGING  print remote job status updates                    (NNSIGHT_REMOTE_LOGGING)
    CONFIG.API.HOST            the remote service                                 (NNSIGHT_HOST, NDIF_HOST)
    CONFIG.API.APIKEY          your API key                                       (NNSIGHT_API_KEY, NDIF_API_KEY)

Precedence, lowest first: the defaults above < the per-user config file <
environment variables (and ``python -d`` for DEBUG) < assignments in code.
The file is ``$NNSIGHT_CONFIG`` if set, else ``$XDG_CONFIG_HOME/nnsight/config.json``
(``~/.config/nnsight/config.json``). ``CONFIG.save()`` writes the current values
to it (a value that only comes from an environment variable is not persisted);
``CONFIG.set_default_api_key(key)`` sets the key and saves.
"""
import json
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f", ""})


@dataclass
class AppConfig:
    DEBUG: bool = False  # show nnsight's internal frames in tracebacks (also `python -d`)
    CROSS_INVOKER: bool = True  # invokes of one trace share variables
    PYMOUNT: bool = True  # `obj.save()` on every object (otherwise use nnsight.save(obj))
    REMOTE_LOGGING: bool = True  # print remote job status updates


@dataclass
class ApiConfig:
    HOST: str = "localhost:8000"
    APIKEY: str = ""

    def __repr__(self) -> str:  # never print a whole key
        key = self.APIKEY
        shown = (key[:4] + "..." if len(key) > 8 else "***") if key else ""
        return f"ApiConfig(HOST={self.HOST!r}, APIKEY={shown!r})"


# (section, field) -> environment variable
ENV_VARS: Dict[Tuple[str, str], str] = {
    ("APP", "DEBUG"): "NNSIGHT_DEBUG",
    ("APP", "CROSS_INVOKER"): "NNSIGHT_CROSS_INVOKER",
    ("APP", "PYMOUNT"): "NNSIGHT_PYMOUNT",
    ("APP", "REMOTE_LOGGING"): "NNSIGHT_REMOTE_LOGGING",
    ("API", "HOST"): "NNSIGHT_HOST",
    ("API", "APIKEY"): "NNSIGHT_API_KEY",
}

# Other names the same settings are read from (NNSIGHT_* wins when both are set).
ENV_ALIASES: Dict[Tuple[str, str], str] = {
    ("API", "HOST"): "NDIF_HOST",
    ("API", "APIKEY"): "NDIF_API_KEY",
}


def config_path() -> str:
    """Where the per-user configuration lives (``$NNSIGHT_CONFIG`` overrides)."""
    explicit = os.environ.get("NNSIGHT_CONFIG")
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "nnsight", "config.json")


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{where}: expected a boolean (1/0, true/false, yes/no), got {value!r}")
    return str(value)


@dataclass
class Config:
    APP: AppConfig = field(default_factory=AppConfig)
    API: ApiConfig = field(default_factory=ApiConfig)

    def __post_init__(self) -> None:
        # Values as found in the file and in the environment, to persist only what belongs there.
        self._file: Dict[Tuple[str, str], Any] = {}
        self._env: Dict[Tuple[str, str], Any] = {}
        self._path: Optional[str] = None

    # ------------------------------------------------------------- loading

    def _sections(self):
        return (("APP", self.APP), ("API", self.API))

    def load(self, path: Optional[str] = None, environ=None) -> "Config":
        """Reset to defaults, then apply the file, then the environment (and ``python -d``)."""
        environ = os.environ if environ is None else environ
        self.APP, self.API = AppConfig(), ApiConfig()
        self._path = path or config_path()
        self._file, self._env = {}, {}
        data = self._read_file(self._path)
        for name, section in self._sections():
            values = data.get(name) if isinstance(data.get(name), dict) else {}
            for f in fields(section):
                if f.name in values:
                    value = _coerce(values[f.name], f.default, f"{self._path}: {name}.{f.name}")
                    setattr(section, f.name, value)
                    self._file[(name, f.name)] = value
        for (name, key), var in ENV_VARS.items():
            raw = environ.get(var)
            if raw is None and (name, key) in ENV_ALIASES:
                var = ENV_ALIASES[(name, key)]
                raw = environ.get(var)
            if raw is None:
                continue
            section = getattr(self, name)
            value = _coerce(raw, getattr(type(section), key), f"environment variable {var}")
            setattr(section, key, value)
            self._env[(name, key)] = value
        if getattr(sys.flags, "debug", 0):  # `python -d`
            self.APP.DEBUG = True
            self._env[("APP", "DEBUG")] = True
        return self

    @staticmethod
    def _read_file(path: str) -> Dict[str, Any]:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            import warnings

            warnings.warn(f"nnsight: ignoring unreadable config file {path}: {error}")
            return {}
        return data if isinstance(data, dict) else {}

    # -------------------------------------------------------------- saving

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """The values to persist: current ones, except those only the environment supplied."""
        out: Dict[str, Dict[str, Any]] = {}
        for name, section in self._sections():
            values = {}
            for f in fields(section):
                key = (name, f.name)
                value = getattr(section, f.name)
                if key in self._env and value == self._env[key]:
                    if key not in self._file:
                        continue
                    value = self._file[key]
                values[f.name] = value
            out[name] = values
        return out

    def save(self, path: Optional[str] = None) -> str:
        """Write the configuration to the per-user file (returns its path)."""
        path = path or self._path or config_path()
        data = self.to_dict()
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds an API key
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
        for name, values in data.items():
            for key, value in values.items():
                self._file[(name, key)] = value
        self._path = path
        return path

    def set_default_api_key(self, key: str) -> None:
        """Use ``key`` for remote execution from now on, in this and later sessions."""
        self.API.APIKEY = key
        self._env.pop(("API", "APIKEY"), None)  # chosen explicitly: persist it
        self.save()


CONFIG = Config().load()
