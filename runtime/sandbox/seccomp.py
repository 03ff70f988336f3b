"""A seccomp filter for the sandbox child, built with libseccomp through ctypes.

A deny-list on top of the other layers: no new processes (``fork``, ``vfork``,
``clone`` without ``CLONE_THREAD``; ``clone3`` answers ENOSYS so threads fall back to
``clone``), no ``execve``, no sockets, no ``ptrace`` or cross-process memory
access, no namespace, mount, key-ring, BPF, perf or kernel-module calls. Threads
stay allowed (torch and the runtime may start them); they die with the child,
which is killed at the end of every job.
"""
import ctypes
import ctypes.util
import errno
from typing import List, Optional

_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7
_CLONE_THREAD = 0x00010000

DENIED = (
    "execve", "execveat", "fork", "vfork", "socket", "socketpair", "connect", "bind", "listen", "accept",
    "accept4", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "pidfd_open", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "move_mount", "open_tree", "fsopen",
    "fsmount", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon",
    "swapoff", "acct", "settimeofday", "clock_settime", "open_by_handle_at", "name_to_handle_at", "syslog",
    "iopl", "ioperm", "quotactl", "setsid", "setpgid")


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_LIBRARY: List[Optional[ctypes.CDLL]] = []  # loaded once in the template: a confined child can't search for it


def library() -> Optional[ctypes.CDLL]:
    if not _LIBRARY:
        _LIBRARY.append(_load())
    return _LIBRARY[0]


def _load() -> Optional[ctypes.CDLL]:
    lib = None
    for name in ("libseccomp.so.2", ctypes.util.find_library("seccomp")):
        try:
            lib = ctypes.CDLL(name, use_errno=True) if name else None
        except OSError:
            continue
        if lib is not None:
            break
    if lib is None:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def install() -> List[str]:
    """Load the filter into this process (needs PR_SET_NO_NEW_PRIVS); returns the denied calls."""
    lib = library()
    if lib is None:
        raise OSError("libseccomp is not installed")
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        denied = []
        eperm = _errno_action(errno.EPERM)
        for name in DENIED:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a system call on this architecture
            if lib.seccomp_rule_add_array(ctx, eperm, number, 0, None) != 0:
                raise OSError("seccomp_rule_add failed for %s" % name)
            denied.append(name)
        # clone: threads (CLONE_THREAD) only
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        no_thread = (_ArgCmp * 1)(_ArgCmp(0, _CMP_MASKED_EQ, _CLONE_THREAD, 0))
        if lib.seccomp_rule_add_array(ctx, eperm, clone, 1, no_thread) != 0:
            raise OSError("seccomp_rule_add failed for clone")
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0 and lib.seccomp_rule_add_array(ctx, _errno_action(errno.ENOSYS), clone3, 0, None) != 0:
            raise OSError("seccomp_rule_add failed for clone3")
        if lib.seccomp_load(ctx) != 0:
            raise OSError("seccomp_load failed")
        return denied + ["clone (new processes)", "clone3"]
    finally:
        lib.seccomp_release(ctx)
