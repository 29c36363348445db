"""The build sandbox: every step that runs a customer's code goes through here.

A step runs under bubblewrap (``bwrap``) with:

- an environment made only of an allow-list (PATH, HOME and TMPDIR inside the workspace,
  LANG, CI) and what the executor passes (tool-chain variables, the account's secrets);
- its own user, PID, IPC, UTS and (unless the step fetches) network namespaces;
- a mount view of its own: the system's /usr, a few files of /etc and the tool chain
  read-only, the job's workspace (and the paths the step names) writable, an empty /tmp and
  /dev; nothing else of the machine (the project's var/, other workspaces, /root, /home);
- rlimits on processes, memory, open files, file size and CPU time;
- an unprivileged user: a worker running as root sets the sandbox up as root and then runs
  the step as its account's own user id from ``BUILD_SANDBOX_UID_BASE`` (so the process
  limit is the account's alone) without capabilities; an unprivileged worker's steps run as
  its own user inside a user namespace without capabilities.

``BUILD_SANDBOX=off`` runs steps as plain children with the same clean environment; a
production worker refuses that unless ``BUILD_SANDBOX_UNSAFE_OK`` says the deployment is
single-tenant.
"""

import contextlib
import ctypes
import functools
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

MB = 1024 * 1024
PR_SET_PDEATHSIG = 1
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a tool needs to resolve names, speak TLS, find its libraries and know who it
# is; never the whole of /etc (service configuration there may carry passwords).
ETC_ENTRIES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/ssh/ssh_config",
    "/etc/ssh/ssh_config.d",
    "/etc/java-17-openjdk",
)
SANDBOX_USER = "builder"
SANDBOX_HOSTNAME = "buildhub-sandbox"
DEFAULT_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
SETPRIV = "/usr/bin/setpriv"  # util-linux


class SandboxUnavailable(Exception):
    """This worker cannot run steps in a sandbox; the message is for its operator."""


@dataclass(frozen=True)
class Limit:
    name: str  # what the customer reads
    setting: str

    @property
    def value(self) -> int:
        return getattr(settings, self.setting)

    def describe(self) -> str:
        return f"the sandbox's {self.name} limit ({self.setting}={self.value})"


LIMITS = {
    "processes": Limit("process", "BUILD_SANDBOX_MAX_PROCESSES"),
    "memory": Limit("memory", "BUILD_SANDBOX_MEMORY_MB"),
    "open_files": Limit("open files", "BUILD_SANDBOX_OPEN_FILES"),
    "file_size": Limit("file size", "BUILD_SANDBOX_FILE_SIZE_MB"),
    "cpu": Limit("CPU time", "BUILD_SANDBOX_CPU_SECONDS"),
}


# What a tool prints, or how it ends, when it hits one of the limits.
LIMIT_SIGNS = (
    (
        "memory",
        re.compile(
            r"allocation failed|out of memory|cannot allocate memory|\bENOMEM\b|bad_alloc"
            r"|memoryerror",
            re.I,
        ),
    ),
    (
        "processes",
        re.compile(
            r"cannot fork|fork: retry|fork failed|spawn[^\n]*\bEAGAIN\b|\bEAGAIN\b[^\n]*spawn"
            r"|resource temporarily unavailable",
            re.I,
        ),
    ),
    ("open_files", re.compile(r"\bEMFILE\b|too many open files", re.I)),
    ("file_size", re.compile(r"\bEFBIG\b|file too large|file size limit exceeded", re.I)),
)
SIGNAL_LIMITS = {128 + 24: "cpu", 128 + 25: "file_size", -24: "cpu", -25: "file_size"}


class LimitWatch:
    """Reads a step's output for the signs of a limit; names the first one seen."""

    def __init__(self):
        self.hit: str | None = None

    def __call__(self, line: str) -> None:
        if self.hit is None:
            for key, sign in LIMIT_SIGNS:
                if sign.search(line):
                    self.hit = key
                    return

    def reached(self, returncode: int) -> Limit | None:
        key = SIGNAL_LIMITS.get(returncode) or (self.hit if returncode != 0 else None)
        return LIMITS[key] if key else None


def python_script(script: Path, *args) -> tuple[list, list]:
    """A standard-library-only script of the service's, run in a step by the interpreter
    alone (``-I -S``: no site-packages, no environment): its command line and the paths it
    must see read-only (the script and the interpreter's prefix, not the virtual
    environment's link to it)."""
    script = Path(script).resolve()
    command = [os.path.realpath(sys.executable), "-I", "-S", script, *args]
    return command, [script, sys.base_prefix]


def enabled() -> bool:
    return settings.BUILD_SANDBOX == "bwrap"


def mode_refusal() -> str | None:
    """Why this worker must not run jobs in its configured mode, or None."""
    if not enabled() and settings.PRODUCTION and not settings.BUILD_SANDBOX_UNSAFE_OK:
        return (
            "BUILD_SANDBOX=off in production: customer code would run with the worker's "
            "user, files and network. Set BUILD_SANDBOX=bwrap, or BUILD_SANDBOX_UNSAFE_OK=true "
            "if this deployment runs only its own code."
        )
    return None


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str, uid: int) -> str:
    """'' when a trivial sandbox starts here, else why not (cached per process)."""
    path = shutil.which(bwrap)
    if path is None:
        return (
            f"bubblewrap ({bwrap}) is not installed on this worker: install the Debian "
            "package 'bubblewrap' (make test and .ci/run do)"
        )
    probe = [path, *_isolation(network=False), *_system_mounts(), "--", *_drop_to(uid), "/bin/true"]
    try:
        result = subprocess.run(
            probe, capture_output=True, text=True, timeout=30, env={"PATH": ":".join(DEFAULT_PATH)}
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"bubblewrap could not start: {error}"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return (
            f"bubblewrap fails on this worker ({detail[-1] if detail else result.returncode}); "
            "it needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces > 0)"
        )
    return ""


def probe() -> str:
    """The mode this worker's steps run in, as /healthz and the dashboard show it."""
    if not enabled():
        return "off"
    problem = _probe(settings.BUILD_SANDBOX_BWRAP, _probe_uid())
    return f"broken: {problem}" if problem else "bwrap"


def _probe_uid() -> int:
    return settings.BUILD_SANDBOX_UID_BASE if os.geteuid() == 0 else os.getuid()


def _drop_to(uid: int) -> list[str]:
    """As root, bwrap sets up the sandbox (reading whatever it binds) and setpriv then makes
    the step an unprivileged user with no capabilities; otherwise the step keeps the worker's
    own user, inside a user namespace without capabilities."""
    if os.geteuid() != 0:
        return []
    return [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


def _isolation(network: bool) -> list[str]:
    args = [] if os.geteuid() == 0 else ["--unshare-user", "--cap-drop", "ALL"]
    args += [
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        SANDBOX_HOSTNAME,
        "--die-with-parent",
        "--new-session",
    ]
    if not network:
        args.append("--unshare-net")  # a network namespace with only its own loopback
    return args


def _system_mounts() -> list[str]:
    args: list[str] = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
    made: set[str] = set()
    for entry in ETC_ENTRIES:
        if os.path.lexists(entry):
            args += [*_parents(Path(entry), made), "--ro-bind-try", entry, entry]
    # An empty /tmp of the step's own, writable by it like any /tmp.
    return [*args, "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]


MOUNTED_DIRS = ("/", "/tmp", "/dev", "/proc")


def _parents(path: Path, made: set[str]) -> list[str]:
    """Folders leading to a bind, made traversable (bwrap would copy their host modes)."""
    args = []
    for parent in reversed(path.parents):
        name = str(parent)
        if name in MOUNTED_DIRS or name in made:
            continue
        made.add(name)
        args += ["--perms", "0755", "--dir", name]
    return args


def _visible_under(path: Path, roots) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _refuse_service_paths(path: Path, workspace_root: Path) -> None:
    """A path given to a step must not show the service's own state or other jobs' work:
    never var/ (only a cache folder below var/cache), never the folder of all workspaces."""
    var = Path(settings.VAR_DIR).resolve()
    for protected, what in (
        (var, "this installation's var/"),
        (workspace_root, "every job's workspace"),
    ):
        if path == protected or path in protected.parents:
            raise SandboxUnavailable(f"{path} holds {what} ({protected}); a build cannot see it")
    if var in path.parents and var / "cache" not in path.parents:
        raise SandboxUnavailable(f"{path} is in this installation's var/; a build cannot see it")


def hand_over(path: Path, uid: int) -> None:
    """Give ``path`` and what the worker wrote in it to the sandbox's user (root workers).

    The worker writes into a step's folders at their top (``out``, ``tmp``, a package's
    folder, the unpacked source) between steps: the top is always looked at. Below it, a
    folder the sandbox made is its already and is not walked, so a node_modules written by
    npm costs nothing. Links are changed, never followed (and no step outlives itself to swap
    a folder for a link meanwhile).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if info.st_uid != uid:
        os.lchown(path, uid, uid)
    if not stat.S_ISDIR(info.st_mode):
        return
    with os.scandir(path) as children:
        pending = [child.path for child in children]
    while pending:
        current = pending.pop()
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            continue
        if info.st_uid == uid:
            continue
        os.lchown(current, uid, uid)
        if stat.S_ISDIR(info.st_mode):
            with os.scandir(current) as children:
                pending.extend(child.path for child in children)


def remove_tree(path: Path) -> None:
    """Delete a workspace whatever its steps did to the modes of what they wrote."""

    def allow_and_retry(function, failed_path, _error):
        with contextlib.suppress(OSError):
            parent = os.path.dirname(failed_path)
            os.chmod(parent, 0o700)
            if os.path.isdir(failed_path) and not os.path.islink(failed_path):
                os.chmod(failed_path, 0o700)
            function(failed_path)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=allow_and_retry)


def step_environment(workspace: Path, env: dict | None, program: str = "") -> dict[str, str]:
    """A step's whole environment (sandboxed or not): the allow-list, then what the executor
    gives. HOME and TMPDIR are folders of the workspace, made here; PATH is the system's
    folders and the folder of the step's program."""
    for name in ("home", "tmp"):
        (workspace / name).mkdir(exist_ok=True)
    found = shutil.which(program) if program else None
    path = [os.path.dirname(found)] if found else []
    base = {
        name: os.environ[name] for name in settings.BUILD_SANDBOX_PASS_ENV if name in os.environ
    }
    base.update(
        HOME=str(workspace / "home"),
        TMPDIR=str(workspace / "tmp"),
        LANG=os.environ.get("LANG") or "C.UTF-8",
        CI="1",
    )
    given = {key: str(value) for key, value in (env or {}).items()}
    return {**base, **given, "PATH": ":".join(dict.fromkeys([*path, *DEFAULT_PATH]))}


def sandbox_uid(owner: int) -> int:
    """The user id of an account's steps when the worker runs as root.

    One per account (not per job): the account's caches stay its own user's from one build
    to the next, and one account's processes never count against another's limit (unless
    ``BUILD_SANDBOX_UID_COUNT`` accounts apart, which then share only that limit).
    """
    return settings.BUILD_SANDBOX_UID_BASE + owner % settings.BUILD_SANDBOX_UID_COUNT


def _etc_files(directory: Path, uid: int) -> Path:
    """/etc/passwd and /etc/group naming the sandbox's user (ssh and git look it up)."""
    folder = directory / f"etc-{uid}"
    if not (folder / "group").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("passwd", f"{SANDBOX_USER}:x:{uid}:{uid}:BuildHub build:/nonexistent:/bin/sh\n"),
            ("group", f"{SANDBOX_USER}:x:{uid}:\n"),
        ):
            temporary = folder / f".{name}.{os.getpid()}"
            temporary.write_text(text)
            temporary.replace(folder / name)
    return folder


class Sandbox:
    """A job's sandbox: its user, its workspace and the command line of each step."""

    def __init__(self, workspace: Path, owner: int, state_dir: Path):
        self.workspace = Path(workspace)
        self.uid = sandbox_uid(owner) if os.geteuid() == 0 else os.getuid()
        self.state_dir = Path(state_dir)
        self._etc: Path | None = None

    def open(self) -> "Sandbox":
        """Check that bwrap works on this worker; prepare the job's /etc files and folders."""
        problem = _probe(settings.BUILD_SANDBOX_BWRAP, _probe_uid())
        if problem:
            raise SandboxUnavailable(problem)
        self._etc = _etc_files(self.state_dir, self.uid)
        return self

    # --- a step -------------------------------------------------------------------------
    def command(
        self,
        args: list[str],
        *,
        cwd: Path,
        network: bool = False,
        writable=(),
        readable=(),
    ) -> list[str]:
        """bwrap's command line for one step.

        ``writable`` entries are paths, shown where they are, or ``(path, inside)`` pairs, shown
        at ``inside`` (a cache below var/ is shown as /cache/..., so the step learns nothing of
        where the service keeps its state).
        """
        bwrap = shutil.which(settings.BUILD_SANDBOX_BWRAP) or settings.BUILD_SANDBOX_BWRAP
        etc = self._etc
        if etc is None:
            raise RuntimeError("Sandbox.open() prepares the sandbox before its commands")
        mounts = _system_mounts()
        mounts += ["--ro-bind", str(etc / "passwd"), "/etc/passwd"]
        mounts += ["--ro-bind", str(etc / "group"), "/etc/group"]
        shown = [Path(p) for p in SYSTEM_DIRS]
        program = Path(shutil.which(args[0]) or args[0])
        args = [str(program), *args[1:]]
        extra = [program.parent] if program.is_absolute() else []
        extra += [Path(p) for p in settings.BUILD_SANDBOX_READONLY_PATHS]
        made: set[str] = set()
        for path in [*readable, *extra]:
            path = Path(path).resolve()
            _refuse_service_paths(path, self.state_dir.parent.resolve())
            if not path.exists() or _visible_under(path, shown):
                continue
            mounts += [*_parents(path, made), "--ro-bind", str(path), str(path)]
            shown.append(path)
        for entry in [self.workspace, *writable]:
            path, inside = (
                (Path(entry[0]), Path(entry[1]))
                if isinstance(entry, tuple)
                else (
                    Path(entry),
                    Path(entry),
                )
            )
            _refuse_service_paths(path.resolve(), self.state_dir.parent.resolve())
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                hand_over(path, self.uid)
            mounts += [*_parents(inside, made), "--bind", str(path), str(inside)]
        return [
            bwrap,
            *_isolation(network),
            *mounts,
            "--chdir",
            str(cwd),
            "--",
            *_drop_to(self.uid),
            *[str(arg) for arg in args],
        ]

    def popen_kwargs(self) -> dict:
        return {"preexec_fn": limits_setter()}


def die_with_parent() -> None:
    """In a child before exec: be killed if the worker process dies (kill -9 included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the reaper still re-queues the job; the tool may run on alone


def limits_setter():
    """What the step's process runs before exec: the rlimits, which all it starts inherit.

    The values are read here, in the worker; the child only makes system calls (no imports,
    no settings access between fork and exec).
    """
    cpu = settings.BUILD_SANDBOX_CPU_SECONDS
    values = (
        (resource.RLIMIT_NPROC, settings.BUILD_SANDBOX_MAX_PROCESSES),
        # Data, not address space: V8 reserves far more address space than it ever uses.
        (resource.RLIMIT_DATA, settings.BUILD_SANDBOX_MEMORY_MB * MB),
        (resource.RLIMIT_NOFILE, settings.BUILD_SANDBOX_OPEN_FILES),
        (resource.RLIMIT_FSIZE, settings.BUILD_SANDBOX_FILE_SIZE_MB * MB),
        (resource.RLIMIT_CORE, 0),
    )

    def apply():
        die_with_parent()
        for which, value in values:
            resource.setrlimit(which, (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU, then SIGKILL

    return apply
