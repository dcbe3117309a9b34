"""The launcher: confines a process, then execs the Jupyter kernel (or bubblewrap).

Run as a script with ``python -I -S _launch.py '<json config>'`` so that it starts in a few
milliseconds and imports nothing but the standard library (it also runs *inside* the bubblewrap
sandbox, where the ``sandbox`` package is not mounted). Modes:

``outer``     on the host: put the seccomp filter in a memfd for bwrap, then exec ``bwrap`` (tier A).
``inner``     inside bwrap: set rlimits, drop to the sandbox uid when root, exec the kernel. Limits
              are set here, after bwrap made its namespaces, so that (unprivileged, in a user
              namespace) ``RLIMIT_NPROC`` counts only the sandbox's own processes.
``landlock``  tier B: stay as a small supervisor (child subreaper) and fork the kernel, which drops
              its uid, sets rlimits, Landlock and seccomp, then execs. When the kernel exits or the
              host asks, the supervisor kills every descendant, including ones that called setsid.
``none``      no isolation (explicit in the policy): rlimits, then exec.
``sweep``     as root: kill every process of the sandbox uid (``kill(-1)`` as that uid).
``probe``     print the Landlock ABI version and exit.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import struct
import sys
import time

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def _prctl(option: int, arg: int | ctypes.Array = 0) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


# ----------------------------------------------------------------------------------------------
# rlimits and privileges

_RLIMITS = {
    "AS": resource.RLIMIT_AS,
    "NPROC": resource.RLIMIT_NPROC,
    "FSIZE": resource.RLIMIT_FSIZE,
    "NOFILE": resource.RLIMIT_NOFILE,
    "CPU": resource.RLIMIT_CPU,
    "CORE": resource.RLIMIT_CORE,
}


def set_rlimits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        kind = _RLIMITS[name]
        soft = value
        # CPU: SIGXCPU at the soft limit (the kernel dies: Python does not handle it), SIGKILL 5 s later.
        hard = value + 5 if name == "CPU" else value
        resource.setrlimit(kind, (soft, hard))


def drop_privileges(uid: int, gid: int) -> None:
    """Become an unprivileged user for good: no supplementary groups, real/effective/saved ids."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:  # paranoia: a failed drop must never run code
        raise OSError("could not drop privileges")


# ----------------------------------------------------------------------------------------------
# seccomp: a small deny list (x86_64 and aarch64)

_SYSCALLS = {
    "x86_64": dict(
        socket=41, connect=42, clone=56, clone3=435, ptrace=101, keyctl=250, add_key=248, request_key=249,
        bpf=321, perf_event_open=298, userfaultfd=323, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, unshare=272, setns=308, mount=165, umount2=166, pivot_root=155, chroot=161,
        kexec_load=246, kexec_file_load=320, init_module=175, finit_module=313, delete_module=176,
        process_vm_readv=310, process_vm_writev=311, acct=163, swapon=167, swapoff=168, reboot=169,
        open_by_handle_at=304, name_to_handle_at=303, fanotify_init=300, mount_setattr=442, open_tree=428,
        move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_getfd=438,
    ),
    "aarch64": dict(
        socket=198, connect=203, clone=220, clone3=435, ptrace=117, keyctl=219, add_key=217, request_key=218,
        bpf=280, perf_event_open=241, userfaultfd=282, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, unshare=97, setns=268, mount=40, umount2=39, pivot_root=41, chroot=51,
        kexec_load=104, kexec_file_load=294, init_module=105, finit_module=273, delete_module=106,
        process_vm_readv=270, process_vm_writev=271, acct=89, swapon=224, swapoff=225, reboot=142,
        open_by_handle_at=265, name_to_handle_at=264, fanotify_init=262, mount_setattr=442, open_tree=428,
        move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_getfd=438,
    ),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_ALWAYS_DENIED = [name for name in _SYSCALLS["x86_64"] if name not in ("socket", "connect", "clone", "clone3")]
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_NETLINK_ROUTE = 0
_EPERM, _EACCES, _ENOSYS, _EAFNOSUPPORT = 1, 13, 38, 97
_RET_ALLOW, _RET_ERRNO, _RET_KILL = 0x7FFF0000, 0x00050000, 0x80000000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


def seccomp_program(deny_network: bool) -> bytes:
    """A classic-BPF seccomp filter, as bytes of ``struct sock_filter``.

    Denies kernel attack surface a notebook never needs (io_uring, bpf, keyrings, ptrace, mounts,
    namespaces, modules...). Sockets: only Unix, IPv4/IPv6 and route-netlink ones can be made in any
    tier, since other families (vsock, packet, bluetooth, CAN, ...) are not isolated by a network
    namespace. With ``deny_network`` (tier B, which has no network namespace) no IPv4/IPv6 socket can
    be made at all: no UDP or DNS, no MPTCP, no TCP Fast Open, no listening port the outside could
    reach (``listen`` binds one by itself, unseen by Landlock). ipykernel's TCP pipe for forked
    children's output is then off, as it warns; children could not have connected to it anyway.
    """
    arch = os.uname().machine
    if arch not in _SYSCALLS:
        raise OSError(f"seccomp filter not available on {arch}")
    nr = _SYSCALLS[arch]
    code: list[tuple[int, int | str, int | str, int]] = []  # jumps: an offset, or a label resolved below
    labels: dict[str, int] = {}

    def op(kind: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        code.append((kind, jt, jf, k))

    op(_LD_ABS, 4)  # seccomp_data.arch
    op(_JEQ, _AUDIT_ARCH[arch], 0, "kill")
    op(_LD_ABS, 0)  # seccomp_data.nr
    if arch == "x86_64":
        op(_JGE, 0x40000000, "eperm")  # the x32 ABI would bypass every rule below
    op(_JEQ, nr["clone3"], "enosys")  # libc falls back to clone(), whose flags we can read
    op(_JEQ, nr["clone"], "clone")
    for name in _ALWAYS_DENIED:
        op(_JEQ, nr[name], "eperm")
    op(_JEQ, nr["socket"], "socket")
    op(_RET, _RET_ALLOW)
    labels["clone"] = len(code)
    op(_LD_ABS, 16)  # args[0], low half: clone flags
    op(_JSET, _NAMESPACE_FLAGS, "eperm")
    op(_RET, _RET_ALLOW)
    labels["socket"] = len(code)
    op(_LD_ABS, 16)  # args[0]: the address family
    op(_JEQ, _AF_UNIX, "allow")
    op(_JEQ, _AF_INET, "eacces" if deny_network else "allow")
    op(_JEQ, _AF_INET6, "eacces" if deny_network else "allow")
    op(_JEQ, _AF_NETLINK, "netlink")
    op(_RET, _RET_ERRNO | _EAFNOSUPPORT)
    labels["netlink"] = len(code)
    op(_LD_ABS, 32)  # args[2]: the netlink protocol (route: read interface addresses)
    op(_JEQ, _NETLINK_ROUTE, "allow")
    op(_RET, _RET_ERRNO | _EAFNOSUPPORT)
    for name, value in (("allow", _RET_ALLOW), ("eperm", _RET_ERRNO | _EPERM), ("eacces", _RET_ERRNO | _EACCES),
                        ("enosys", _RET_ERRNO | _ENOSYS), ("kill", _RET_KILL)):
        labels[name] = len(code)
        op(_RET, value)

    out = bytearray()
    for i, (kind, jt, jf, k) in enumerate(code):
        jumps = [labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)]
        assert all(0 <= j < 256 for j in jumps)
        out += struct.pack("<HBBI", kind, jumps[0], jumps[1], k)
    return bytes(out)


def apply_seccomp(program: bytes) -> None:
    count = len(program) // 8
    filters = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(count, ctypes.addressof(filters))
    if _libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0) != 0:  # SECCOMP_MODE_FILTER
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")


# ----------------------------------------------------------------------------------------------
# Landlock

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on every architecture
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ_ONLY = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR


def landlock_abi() -> int:
    """The Landlock ABI version the running kernel offers, 0 when it has none."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def landlock_ruleset(read: list[str], write: list[str], devices: list[str], deny_network: bool) -> int:
    """A Landlock ruleset allowing only the given paths; returns its fd (see :func:`restrict_self`).

    Built before dropping privileges, so that paths only root can reach can still be granted.
    Everything not listed is invisible to reads and writes. From ABI 4, TCP bind/connect are denied
    when ``deny_network``; from ABI 6, signals and abstract Unix sockets are scoped to the sandbox.
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError("Landlock is not available in this kernel")
    handled = _handled_fs(abi)
    net = 0b11 if (abi >= 4 and deny_network) else 0  # bind_tcp | connect_tcp: a second wall behind seccomp
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets | signals
    attr = struct.pack("<QQQ", handled, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    buf = ctypes.create_string_buffer(attr[:size], size)
    ruleset = _libc.syscall(_SYS_CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    for paths, rights in ((read, _READ_ONLY), (write, handled),
                          (devices, _FS_READ_FILE | _FS_WRITE_FILE | _FS_IOCTL_DEV)):
        for path in paths:
            _add_path_rule(int(ruleset), path, rights & handled)
    return int(ruleset)  # with net handled and no port allowed, every TCP bind and connect is denied


def restrict_self(ruleset: int) -> None:
    """Enforce the ruleset on this process and everything it starts, for good."""
    if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    os.close(ruleset)


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path this system does not have
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS  # Landlock refuses directory rights on a file
        rule = ctypes.create_string_buffer(struct.pack("<Qi", rights, fd), 12)  # packed path_beneath_attr
        if _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), rule, ctypes.c_uint32(0)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_add_rule({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# modes


def join_cgroup(config: dict) -> None:
    """Move this process into the kernel's cgroup; everything it starts from now on is counted there."""
    for procs in config.get("cgroup", []):
        with open(procs, "w") as file:
            file.write(str(os.getpid()))


def run_outer(config: dict) -> None:
    join_cgroup(config)
    argv = list(config["argv"])
    if "@SECCOMP_FD@" in argv:
        fd = os.memfd_create("sandbox-seccomp", 0)
        os.write(fd, seccomp_program(deny_network=config.get("deny_network", False)))
        os.lseek(fd, 0, os.SEEK_SET)
        os.set_inheritable(fd, True)
        argv[argv.index("@SECCOMP_FD@")] = str(fd)
    os.execve(argv[0], argv, config.get("env", {}))


def run_inner(config: dict) -> None:
    set_rlimits(config["rlimits"])
    if config.get("uid") is not None:
        drop_privileges(config["uid"], config["gid"])
    os.execve(config["argv"][0], config["argv"], config["env"])


def run_none(config: dict) -> None:
    set_rlimits(config["rlimits"])
    os.chdir(config["cwd"])
    os.execve(config["argv"][0], config["argv"], config["env"])


def run_landlock(config: dict) -> None:
    join_cgroup(config)
    host = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans (setsid, double fork) come back to us, to be killed
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != host:
        os._exit(1)
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    supervisor = os.getpid()
    kernel = os.fork()
    if kernel == 0:
        try:
            _confine_and_exec(config, supervisor)
        except BaseException as exc:
            os.write(2, f"sandbox launcher: {type(exc).__name__}: {exc}\n".encode())
        os._exit(126)

    def terminate(signum: int, _frame: object) -> None:
        kill_descendants()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    status = 0
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == kernel:
            status = wait_status
            break
    kill_descendants()
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


def _confine_and_exec(config: dict, supervisor: int) -> None:
    os.setsid()  # its own session: no terminal, and its interrupts stay in its process group
    argv, env = config["argv"], config["env"]
    if config.get("expose"):
        expose_paths(config["expose"])
    rules = config["landlock"]
    # Its own /proc/<pid> (also reached as /proc/self), which exec keeps; other processes' are hidden.
    read = [*rules["read"], f"/proc/{os.getpid()}"]
    ruleset = landlock_ruleset(read, rules["write"], rules["devices"], deny_network=config["deny_network"])
    set_rlimits(config["rlimits"])
    if config.get("uid") is not None:
        drop_privileges(config["uid"], config["gid"])
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    if os.getppid() != supervisor:
        os._exit(1)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.chdir(config["cwd"])
    restrict_self(ruleset)
    apply_seccomp(seccomp_program(deny_network=config["deny_network"]))
    os.execve(argv[0], argv, env)


_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda v: v.encode() if v is not None else None
    if _libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def expose_paths(expose: dict[str, list[str]]) -> None:
    """As root, in a private mount namespace: make paths under unreachable directories reachable.

    ``expose`` maps a directory the sandbox uid cannot pass (``/root``, mode 0700) to the paths
    under it the kernel needs (a pyenv Python). The directory is covered by an empty tmpfs (hiding
    the rest of it) and each path is bind-mounted back, read-only, at its own place.
    """
    if _libc.unshare(_CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below may propagate to the host
    for hidden, paths in expose.items():
        fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in paths}
        _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=65536")
        for path, fd in fds.items():
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
            _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
            os.close(fd)


def kill_descendants() -> None:
    """SIGKILL our children until none is left; orphaned grandchildren are reparented to us."""
    me = str(os.getpid())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in _children(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.005)


def _children(ppid: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[1].decode() == ppid:
            found.append(int(entry))
    return found


def run_sweep(config: dict) -> None:
    """Kill every process of the sandbox uid: ``kill(-1)`` from that uid reaches exactly those."""
    drop_privileges(config["uid"], config["gid"])
    me = os.getpid()
    deadline = time.monotonic() + 5
    # kill(-1) reports success whenever other processes exist at all, so look for survivors instead;
    # then wait for their zombies to be reaped too, since they still count against RLIMIT_NPROC,
    # which the kernel's next start is bound by.
    while _processes_of(config["uid"], me, zombies=False) and time.monotonic() < deadline:
        os.kill(-1, signal.SIGKILL)  # every process we may signal, except ourselves
        time.sleep(0.005)
    while _processes_of(config["uid"], me, zombies=True) and time.monotonic() < deadline:
        time.sleep(0.005)


def _processes_of(uid: int, me: int, zombies: bool) -> bool:
    """Whether a process of ``uid`` other than us exists (counting zombies when ``zombies``)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if zombies or stat[stat.rfind(b")") + 2 :].split()[0] != b"Z":
                return True
    return False


def main() -> None:
    config = json.loads(sys.argv[1])
    mode = config["mode"]
    if mode == "probe":
        print(landlock_abi())
        return
    {"outer": run_outer, "inner": run_inner, "none": run_none, "landlock": run_landlock, "sweep": run_sweep}[mode](config)


if __name__ == "__main__":
    main()
