#!/usr/bin/python3
"""In-sandbox probes for tests/escape.rs: each tries one attack with harmless arguments
and prints what the kernel answered, one `NAME RESULT` line per probe.

RESULT is `ok` when the call succeeded, else the errno name (`EPERM`, `EFAULT`, ...); the
foreign-ABI probes print `killed SIGSYS`, `killed SIGSEGV`, `exit N` or `returned N`.

The arguments are chosen (as in bubblewrap's tests/test-seccomp.py) so that a call the
seccomp filter lets through fails in the kernel's argument checks, with an errno other than
EPERM, or succeeds without harm; a filtered call fails with the filter's errno instead.

    python3 escape.py calls keyctl add_key ...   # the syscall probes below
    python3 escape.py foreign int80|x32          # a foreign syscall ABI, in a child
    python3 escape.py tcp bind|connect [PORT]    # TCP on the sandbox's loopback
    python3 escape.py unix NAME                  # connect to abstract unix socket @NAME
    python3 escape.py read [--add-key] FILE...   # the first 4 KiB of each FILE
    python3 escape.py chroot                     # chroot("/")
    python3 escape.py list                       # the probe names

x86_64 only: the syscall numbers are x86_64's; elsewhere it prints `unsupported-arch`
and exits 3.
"""

import ctypes
import errno
import os
import platform
import signal
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
NR = {
    "getpid": 39,
    "clone": 56,
    "ioctl": 16,
    "socket": 41,
    "syslog": 103,
    "ptrace": 101,
    "personality": 135,
    "pivot_root": 155,
    "adjtimex": 159,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "clone3": 435,
    "mount_setattr": 442,
    "quotactl_fd": 443,
}

CLONE_THREAD = 0x00010000
CLONE_NEW = {
    "ns": 0x00020000,
    "cgroup": 0x02000000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "user": 0x10000000,
    "pid": 0x20000000,
    "net": 0x40000000,
}
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
TCGETS = 0x5401
JUNK_HIGH = 0xDEADBEEF00000000
AF_ALG = 38
AF_VSOCK = 40
ADDR_NO_RANDOMIZE = 0x0040000


def syscall(name, *args):
    """Calls system call `name`; returns `ok` or the errno name."""
    libc.syscall.argtypes = [ctypes.c_long] + [ctypes.c_ulong] * len(args)
    ctypes.set_errno(0)
    ret = libc.syscall(NR[name], *[a & 0xFFFFFFFFFFFFFFFF for a in args])
    if ret == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    if ret >= 0 and name in ("socket", "userfaultfd", "io_uring_setup", "fsopen"):
        os.close(ret)
    return "ok"


def personality(value):
    result = syscall("personality", value)
    # Undo whatever took effect.
    syscall("personality", 0)
    return result


def ptrace_attach(pid):
    result = syscall("ptrace", 16, pid, 0, 0)
    if result == "ok":
        os.waitpid(pid, 0x40000000)  # __WALL: wait for the stop before detaching
        syscall("ptrace", 17, pid, 0, 0)
    return result


def clone_probe(flags):
    # CLONE_THREAD without CLONE_SIGHAND: the kernel rejects it (EINVAL) before it creates
    # anything, so a clone the filter lets through never runs a child.
    return syscall("clone", flags | CLONE_THREAD, 0, 0, 0, 0)


NULL = 0
BAD = 1  # a non-NULL pointer the kernel cannot read: EFAULT when it is read first

PROBES = {
    # Keyring.
    "keyctl": lambda: syscall("keyctl", 1000, 0, 0, 0, 0),
    "add_key": lambda: syscall("add_key", NULL, NULL, NULL, 0, 0),
    "request_key": lambda: syscall("request_key", NULL, NULL, NULL, 0),
    # Memory and kernel interfaces with a history of exploits.
    "userfaultfd": lambda: syscall("userfaultfd", 1 | 2),  # USER_MODE_ONLY | bad bit
    "io_uring_setup": lambda: syscall("io_uring_setup", 1, NULL),
    "io_uring_enter": lambda: syscall("io_uring_enter", -1, 0, 0, 0, NULL, 0),
    "io_uring_register": lambda: syscall("io_uring_register", -1, 0, NULL, 0),
    "bpf": lambda: syscall("bpf", 1000, NULL, 0),
    "perf_event_open": lambda: syscall("perf_event_open", NULL, 0, -1, -1, 0),
    # Kernel code and the machine itself.
    "kexec_load": lambda: syscall("kexec_load", 0, 0, NULL, 0xFFFFFFFF),
    "kexec_file_load": lambda: syscall("kexec_file_load", -1, -1, 0, NULL, 0xFFFFFFFF),
    "init_module": lambda: syscall("init_module", NULL, 0, NULL),
    "finit_module": lambda: syscall("finit_module", -1, NULL, 0xFFFFFFFF),
    "delete_module": lambda: syscall("delete_module", NULL, 0),
    "reboot": lambda: syscall("reboot", 0, 0, 0, NULL),
    "swapon": lambda: syscall("swapon", NULL, 0xFFFFFFFF),
    "swapoff": lambda: syscall("swapoff", NULL),
    "acct": lambda: syscall("acct", BAD),
    "quotactl": lambda: syscall("quotactl", 0xFF, NULL, 0, NULL),
    "quotactl_fd": lambda: syscall("quotactl_fd", -1, 0xFF, 0, NULL),
    "syslog": lambda: syscall("syslog", 1000, NULL, 0),
    # Time.
    "settimeofday": lambda: syscall("settimeofday", NULL, BAD),
    "clock_settime": lambda: syscall("clock_settime", 0, NULL),
    "adjtimex": lambda: syscall("adjtimex", NULL),
    "clock_adjtime": lambda: syscall("clock_adjtime", 0, NULL),
    # Mounts.
    "mount": lambda: syscall("mount", BAD, BAD, BAD, 0, NULL),
    "umount2": lambda: syscall("umount2", NULL, 0xFFFFFFFF),
    "fsopen": lambda: syscall("fsopen", NULL, 0xFFFFFFFF),
    "fsconfig": lambda: syscall("fsconfig", -1, 0xFFFFFFFF, NULL, NULL, 0),
    "fsmount": lambda: syscall("fsmount", -1, 0xFFFFFFFF, 0),
    "fspick": lambda: syscall("fspick", -1, NULL, 0xFFFFFFFF),
    "move_mount": lambda: syscall("move_mount", -1, NULL, -1, NULL, 0xFFFFFFFF),
    "open_tree": lambda: syscall("open_tree", -1, NULL, 0xFFFFFFFF),
    "mount_setattr": lambda: syscall("mount_setattr", -1, NULL, 0xFFFFFFFF, NULL, 0),
    "pivot_root": lambda: syscall("pivot_root", NULL, NULL),
    "open_by_handle_at": lambda: syscall("open_by_handle_at", -1, NULL, 0),
    # Namespaces.
    "unshare": lambda: syscall("unshare", CLONE_NEW["user"] | 1),
    "setns": lambda: syscall("setns", -1, 0),
    "clone3": lambda: syscall("clone3", NULL, 0),
    "clone": lambda: clone_probe(0),
    **{f"clone_new{n}": (lambda f=f: clone_probe(f)) for n, f in CLONE_NEW.items()},
    # Personality: the harmless values, and ADDR_NO_RANDOMIZE (turns off ASLR).
    "personality_query": lambda: personality(0xFFFFFFFF),
    "personality_linux": lambda: personality(0),
    "personality_no_aslr": lambda: personality(ADDR_NO_RANDOMIZE),
    # Socket families.
    "socket_unix": lambda: syscall("socket", socket.AF_UNIX, socket.SOCK_STREAM, 0),
    "socket_alg": lambda: syscall("socket", AF_ALG, socket.SOCK_SEQPACKET, 0),
    "socket_vsock": lambda: syscall("socket", AF_VSOCK, socket.SOCK_STREAM, 0),
    # Terminal ioctls, on a closed fd (EBADF when the filter lets them through).
    "ioctl_tcgets": lambda: syscall("ioctl", -1, TCGETS, NULL),
    "ioctl_tiocsti": lambda: syscall("ioctl", -1, TIOCSTI, NULL),
    "ioctl_tiocsti_high": lambda: syscall("ioctl", -1, JUNK_HIGH | TIOCSTI, NULL),
    "ioctl_tioclinux": lambda: syscall("ioctl", -1, TIOCLINUX, NULL),
    "ioctl_tioclinux_high": lambda: syscall("ioctl", -1, JUNK_HIGH | TIOCLINUX, NULL),
    # Allowed by default; a profile may deny it.
    "ptrace": lambda: syscall("ptrace", 3, 0x7FFFFFFF, 0, 0),  # PEEKUSER, no such pid
    # sbx's init: PTRACE_ATTACH (then PTRACE_DETACH should it ever work).
    "ptrace_attach_init": lambda: ptrace_attach(1),
    "getpid": lambda: syscall("getpid"),
}


def foreign(abi):
    """Makes a getpid call through a foreign ABI in a child; reports how the child ended."""
    if abi == "int80":
        # mov eax, 20 (i386 getpid); int 0x80; ret
        code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
        mmap = libc.mmap
        mmap.restype = ctypes.c_void_p
        mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                         ctypes.c_int, ctypes.c_long]
        # PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS
        page = mmap(None, 4096, 7, 0x22, -1, 0)
        if page in (None, ctypes.c_void_p(-1).value):
            print(f"{abi} mmap-failed {errno.errorcode.get(ctypes.get_errno())}")
            return
        ctypes.memmove(page, code, len(code))
        call = ctypes.CFUNCTYPE(ctypes.c_int)(page)
    elif abi == "x32":
        def call():
            libc.syscall.argtypes = [ctypes.c_long]
            return libc.syscall(0x40000000 | NR["getpid"])
    else:
        raise SystemExit(f"unknown ABI {abi}")
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        ret = call()
        if ret == -1:
            os.write(1, f"{abi} returned -1 {errno.errorcode.get(ctypes.get_errno())}\n".encode())
        else:
            os.write(1, f"{abi} returned {ret}\n".encode())
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print(f"{abi} killed {signal.Signals(os.WTERMSIG(status)).name}")
    elif os.WEXITSTATUS(status) != 0:
        print(f"{abi} exit {os.WEXITSTATUS(status)}")


def tcp(what, port):
    """TCP bind to 127.0.0.1:0, or connect to 127.0.0.1:PORT (by default port 1, where
    nothing listens: ECONNREFUSED when the attempt reaches the network stack)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        if what == "bind":
            s.bind(("127.0.0.1", 0))
        elif what == "connect":
            s.connect(("127.0.0.1", port))
        else:
            raise SystemExit(f"unknown tcp probe {what}")
        print(f"tcp_{what} ok")
    except OSError as e:
        print(f"tcp_{what} {errno.errorcode.get(e.errno, e.errno)}")
    finally:
        s.close()


def unix(name):
    """Connects to the abstract unix socket @NAME."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect("\0" + name)
        print("unix_connect ok")
    except OSError as e:
        print("unix_connect", errno.errorcode.get(e.errno, e.errno))
    finally:
        s.close()


def add_key():
    """Adds a user key to the process keyring, so that /proc/keys has something to show."""
    libc.syscall.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p,
                             ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
    ctypes.set_errno(0)
    ret = libc.syscall(NR["add_key"], b"user", b"sbx-escape-probe", b"x", 1, -2)
    err = errno.errorcode.get(ctypes.get_errno(), "?")
    print("add_key", "ok" if ret >= 0 else err)


def read(path):
    """Prints `PATH ok N` (N bytes in the first read of up to 4 KiB) or `PATH ERRNO`."""
    try:
        with open(path, "rb", buffering=0) as f:
            print(path, "ok", len(f.read(4096)))
    except OSError as e:
        print(path, errno.errorcode.get(e.errno, e.errno))


def main(argv):
    if platform.machine() != "x86_64":
        print("unsupported-arch", platform.machine())
        return 3
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "calls":
        for name in args:
            print(name, PROBES[name]())
            sys.stdout.flush()
    elif cmd == "foreign":
        for abi in args:
            foreign(abi)
    elif cmd == "tcp":
        tcp(args[0], int(args[1]) if len(args) > 1 else 1)
    elif cmd == "unix":
        unix(args[0])
    elif cmd == "read":
        if args[:1] == ["--add-key"]:
            add_key()
            args = args[1:]
        for path in args:
            read(path)
    elif cmd == "chroot":
        print("chroot", syscall("chroot", ctypes.addressof(ctypes.create_string_buffer(b"/"))))
    elif cmd == "list":
        print("\n".join(PROBES))
    else:
        raise SystemExit(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
