"""User configuration: ``from nnsight import CONFIG``.

``CONFIG.APP`` holds behaviour switches (DEBUG, CROSS_INVOKER, PYMOUNT,
REMOTE_LOGGING); ``CONFIG.API`` the remote service's host and API key.
"""
import sys
from dataclasses import dataclass, field


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


@dataclass
class Config:
    APP: AppConfig = field(default_factory=AppConfig)
    API: ApiConfig = field(default_factory=ApiConfig)

    def set_default_api_key(self, key: str) -> None:
        self.API.APIKEY = key


CONFIG = Config()
if getattr(sys.flags, "debug", 0):
    CONFIG.APP.DEBUG = True
