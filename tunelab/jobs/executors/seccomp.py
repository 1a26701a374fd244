"""The seccomp filter every sandboxed job runs under, compiled by libseccomp (the library
bubblewrap's own authors and Flatpak use; Debian's libseccomp2, present wherever systemd is) and
handed to bubblewrap as a BPF program (`--seccomp FD`).

A deny-list in the spirit of Docker's and Flatpak's defaults: the calls a training job never
needs and an escape usually does (debugging other processes, mounting, namespaces, the kernel
keyring, eBPF, perf, userfaultfd, io_uring, modules, file handles, clocks) fail with EPERM;
`clone` with CLONE_NEWUSER fails too, and `clone3` answers ENOSYS, which makes the C library fall
back to `clone`, whose flags a filter can see. Other architectures' calls (i386 `int 0x80`) kill
the process (libseccomp's default for a foreign architecture).

The binding is a few ctypes prototypes over libseccomp.so.2 (no Python package needed).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from functools import lru_cache

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick",
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup", "uselib", "nfsservctl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "iopl", "ioperm",
)
CLONE_NEWUSER = 0x10000000

_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp"""
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class SeccompUnavailable(RuntimeError):
    pass


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable("libseccomp is not installed (Debian: apt-get install libseccomp2)") from exc
    lib.seccomp_init.restype, lib.seccomp_init.argtypes = ctypes.c_void_p, [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


@lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled filter (raw BPF for this machine's architecture), built once a process."""
    lib = _library()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def deny(name: str, code: int, *args: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:             # not a call on this architecture (or this kernel's headers)
                return
            arr = (_ArgCmp * len(args))(*args) if args else None
            rc = lib.seccomp_rule_add_array(ctx, _act_errno(code), nr, len(args), arr)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp rule for {name}: {os.strerror(-rc)}")

        for name in DENIED:
            deny(name, errno.EPERM)
        deny("clone", errno.EPERM, _ArgCmp(0, _CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        deny("clone3", errno.ENOSYS)
        fd = os.memfd_create("tunelab-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            return _read_all(fd)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def filter_fd() -> int:
    """A fresh descriptor holding the filter, at offset 0, for bubblewrap's `--seccomp FD` (the
    caller passes it to the child and closes it)."""
    data = filter_bpf()
    fd = os.memfd_create("tunelab-seccomp")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
