"""Confine a freshly forked sandbox child, layer by layer, and say which layers took effect.

Order matters: each step needs what a later one takes away.

1. a new session (its own process group: the server kills the whole group);
2. every file descriptor closed but the job's channel; stdin/stdout/stderr on /dev/null;
3. a clean environment (no API keys, no HF_TOKEN, no server settings);
4. an empty scratch directory as the working directory;
5. resource limits: address space, CPU seconds, open files, file size, no core dumps;
6. its own network namespace (no interfaces but a down loopback) -- with a user namespace
   when not root; the template enters one once and every child inherits it;
7. every capability dropped (root in the child is an ordinary user of its own files);
8. ``PR_SET_NO_NEW_PRIVS``;
9. Landlock: read-only on the directories Python imports from, read-write on scratch;
10. seccomp: no new processes, exec, sockets, ptrace, namespaces (see :mod:`.seccomp`).

A layer the kernel does not offer is reported as missing (never silently assumed);
:func:`confine` raises if a layer the operator required fails.
"""
import ctypes
import os
import resource
import signal
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import landlock, seccomp

_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_CAP_VERSION_3 = 0x20080522
GiB = 1 << 30


@dataclass
class Limits:
    """Per-job resource limits of a sandbox child."""

    memory_bytes: int = 8 * GiB  # address space the job may add to what the warm template maps
    cpu_seconds: int = 600
    open_files: int = 64
    file_bytes: int = 64 << 20  # largest file it may write (in its scratch directory)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def import_roots() -> List[str]:
    """Directories the child may read: where Python and the loaded packages import from."""
    roots = {p for p in sys.path if p and os.path.isdir(p)}
    roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in ("compiler", "runtime", "nnsight"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            roots.add(os.path.dirname(os.path.dirname(os.path.abspath(module.__file__))))
    return sorted(os.path.realpath(r) for r in roots)


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _close_fds(keep: List[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(devnull, fd)
    if devnull > 2 and devnull not in keep:
        os.close(devnull)
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)


def _drop_capabilities(libc) -> None:
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # beyond the last capability: EINVAL, ignored
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(126 if os.uname().machine == "x86_64" else 91, ctypes.byref(header), data) != 0:  # capset
        raise OSError(ctypes.get_errno(), "capset failed")


def enter_network_namespace() -> Optional[str]:
    """Move this process into a new, empty network namespace (with a user namespace when not root).

    The template does it once, after loading what it needs, so that its children inherit an
    empty namespace without paying for a new one each. Returns None, or why it failed.
    """
    flags = _CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWNET | _CLONE_NEWUSER
    if _libc().unshare(flags) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def vm_size() -> int:
    """This process's address-space size (read before Landlock hides /proc)."""
    return _vm_size()


def job_limits(limits: Limits, mapped: Optional[int] = None) -> None:
    """The address-space and CPU-time limits, counted from now (a spare child sets them when its
    job arrives). ``mapped``: the address space in use, when /proc can no longer say."""
    address = (_vm_size() if mapped is None else mapped) + limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (address, address))
    used = int(sum(os.times()[:2]))
    resource.setrlimit(resource.RLIMIT_CPU, (used + limits.cpu_seconds, used + limits.cpu_seconds + 1))


def confine(channel_fd: int, scratch: str, limits: Limits, required: Optional[List[str]] = None,
            network_namespace: Optional[str] = None, keep_fds: Tuple[int, ...] = (),
            defer_job_limits: bool = False) -> Dict[str, str]:
    """Apply every layer to this (forked, single-threaded) process; returns ``{layer: what it does}``.

    ``network_namespace``: how the process already has its own (empty) network namespace, if it
    does (inherited from the template); otherwise a new one is made here. Layers named in
    ``required`` must succeed, else RuntimeError.
    """
    libc = _libc()
    layers: Dict[str, str] = {}
    missing: Dict[str, str] = {}
    os.setsid()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the template went away: so does the job
    layers["session"] = "own process group, killed as a whole at the end of the job"
    _close_fds([channel_fd, *keep_fds])
    layers["fds"] = "only the job's channel (and its arena) open"
    os.environ.clear()
    os.environ.update({"HOME": scratch, "TMPDIR": scratch, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
                       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    layers["environment"] = "clean (no keys, tokens or server settings)"
    os.chdir(scratch)
    layers["scratch"] = "empty working directory %s" % scratch
    if not defer_job_limits:
        job_limits(limits)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    layers["rlimits"] = "address space +%d MiB, %d CPU s, %d files, %d MiB per file" % (
        limits.memory_bytes >> 20, limits.cpu_seconds, limits.open_files, limits.file_bytes >> 20)
    if network_namespace is not None:
        layers["netns"] = network_namespace
    else:
        error = enter_network_namespace()
        if error is None:
            layers["netns"] = "own network namespace (no interfaces)"
        else:
            missing["netns"] = error
    try:
        _drop_capabilities(libc)
        layers["capabilities"] = "all dropped"
    except OSError as error:
        missing["capabilities"] = str(error)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise RuntimeError("PR_SET_NO_NEW_PRIVS failed: %s" % os.strerror(ctypes.get_errno()))
    layers["no_new_privs"] = "set"
    try:
        denied = landlock.restrict(import_roots(), [scratch])
        layers["landlock"] = "denies " + ", ".join(denied)
    except OSError as error:
        missing["landlock"] = str(error)
    try:
        seccomp.install()
        layers["seccomp"] = "denies new processes, exec, sockets, ptrace, namespaces, mounts, bpf, keys"
    except OSError as error:
        missing["seccomp"] = str(error)
    for name in required or ():
        if name not in layers:
            raise RuntimeError("sandbox layer %r is required but failed: %s" % (name, missing.get(name, "unknown")))
    for name, why in missing.items():
        layers[name] = "MISSING: " + why
    return layers
