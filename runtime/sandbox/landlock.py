"""Landlock (Linux >= 5.13) through raw system calls: file access limited to a few directories.

The sandbox child gets read-only access to the directories Python imports from
(the standard library, site-packages, the server's own packages), read-write
access to its empty scratch directory, and nothing else: ``/etc``, ``/proc``,
the server's data directory, the model's files and every other path fail with
EACCES. Where the kernel's Landlock ABI offers them, TCP bind/connect (ABI 4)
and signals and abstract unix sockets reaching outside the sandbox (ABI 6) are
denied too. Numbers and layouts: ``include/uapi/linux/landlock.h`` (x86_64 and
aarch64 share the system call numbers).
"""
import ctypes
import os
import platform
from typing import Iterable, List

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)  # what a rule on a file may allow
_NET_ALL = (1 << 0) | (1 << 1)  # bind, connect (TCP), ABI >= 4
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets, signals, ABI >= 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> int:
    """The kernel's Landlock ABI version (0: not available)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 0
    version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def restrict(read_only: Iterable[str], read_write: Iterable[str]) -> List[str]:
    """Confine this process (and its future children) to the given directories; returns what was denied.

    Needs ``PR_SET_NO_NEW_PRIVS`` first (or CAP_SYS_ADMIN). Raises OSError when the kernel refuses.
    """
    abi = abi_version()
    if abi <= 0:
        raise OSError("Landlock is not available on this kernel")
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    libc = _libc()
    attr = _RulesetAttr(_FS_BY_ABI.get(abi, (1 << 16) - 1), _NET_ALL if abi >= 4 else 0,
                        _SCOPE_ALL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        rules = [(p, READ_FILE | READ_DIR | EXECUTE) for p in read_only]
        rules += [(p, attr.handled_access_fs) for p in read_write]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path that does not exist needs no rule
            try:
                if not os.path.isdir(path):
                    access &= _FILE_RIGHTS
                rule = _PathBeneathAttr(access & attr.handled_access_fs, fd)
                if libc.syscall(add_rule, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), "landlock_add_rule failed for %s" % path)
            finally:
                os.close(fd)
        if libc.syscall(restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    denied = ["files outside the allowed directories (ABI %d)" % abi]
    if abi >= 4:
        denied.append("TCP bind/connect")
    if abi >= 6:
        denied.append("signals and abstract unix sockets leaving the sandbox")
    return denied
