"""The build sandbox with the real bubblewrap: what a step can see, reach and use.

Each test runs a shell script as a job step (the way executors run Metro, npm or eas) and
reads what it printed from the job's log, as the customer would.
"""

import os
import socket
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from builds import registry
from builds.choices import JobStatus
from builds.engine import sandbox
from builds.engine.runner import run_next_job
from builds.engine.workspaces import WORKSPACE_PREFIX, workspace_root
from builds.models import Job
from tests.builds.engine_helpers import queue_jobs
from tests.support.accounts import make_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.toolchain]

CANARY = "canary-7f3e9a1c-worker-only"
SHELL_KIND = "test.sandbox.shell"


def shell_executor(context):
    params = context.params
    code = context.run(
        ["/bin/sh", "-c", params["script"]],
        env=params.get("env"),
        network=params.get("network", False),
        readable=params.get("readable", ()),
        check=False,
    )
    return {"exit": code}


registry.register_kind(SHELL_KIND, shell_executor, staff_only=True)


@pytest.fixture
def account(db):
    return make_account("enterprise", "Sandbox Co")


@pytest.fixture
def private_workspaces(settings, tmp_path):
    settings.JOB_WORKSPACE_ROOT = str(tmp_path / "workspaces")
    return Path(settings.JOB_WORKSPACE_ROOT)


def run_step(account, script, **params) -> tuple[Job, str]:
    [job] = queue_jobs(account, 1, kind=SHELL_KIND, params={"script": script, **params})
    assert run_next_job() == str(job.pk)
    job = Job.objects.get(pk=job.pk)
    log = "\n".join(job.logs.order_by("seq").values_list("message", flat=True))
    return job, log


def printed(log: str, label: str) -> str:
    """What the step printed after ``label=`` (one line)."""
    for line in log.splitlines():
        if line.startswith(f"{label}="):
            return line[len(label) + 1 :]
    raise AssertionError(f"the step printed no {label}=; log:\n{log}")


# --- environment ---------------------------------------------------------------------------
def test_a_step_sees_only_the_allow_listed_environment_and_what_the_executor_gives(
    account, monkeypatch, private_workspaces
):
    monkeypatch.setenv("BUILDHUB_CANARY", CANARY)
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{CANARY}@127.0.0.1/db")

    job, log = run_step(
        account,
        'echo "names=$(env | cut -d= -f1 | sort | tr "\\n" " ")"; echo "home=$HOME"; '
        'echo "tmp=$TMPDIR"; echo "given=$GIVEN"',
        env={"GIVEN": "from-the-executor"},
    )

    assert job.status == JobStatus.SUCCEEDED, job.error
    names = set(printed(log, "names").split())
    assert names - {"PWD", "SHLVL", "_"} == {"PATH", "HOME", "TMPDIR", "LANG", "CI", "GIVEN"}
    assert CANARY not in log
    assert printed(log, "given") == "from-the-executor"
    workspace = printed(log, "home").removesuffix("/home")
    assert Path(workspace).parent == private_workspaces
    assert printed(log, "tmp") == f"{workspace}/tmp"


def test_an_operator_can_pass_named_worker_variables_on(
    account, monkeypatch, private_workspaces, settings
):
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/corporate.pem")
    monkeypatch.setenv("BUILDHUB_CANARY", CANARY)
    settings.BUILD_SANDBOX_PASS_ENV = ["NODE_EXTRA_CA_CERTS"]

    job, log = run_step(account, 'echo "ca=$NODE_EXTRA_CA_CERTS"; env')

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert printed(log, "ca") == "/etc/ssl/certs/corporate.pem"
    assert CANARY not in log


# --- processes -----------------------------------------------------------------------------
def test_a_step_sees_only_its_own_processes(account, monkeypatch, private_workspaces):
    monkeypatch.setenv("BUILDHUB_CANARY", CANARY)

    job, log = run_step(
        account,
        'echo "pids=$(ls /proc | grep -E "^[0-9]+$" | tr "\\n" " ")"; '
        'echo "environ=$(cat /proc/[0-9]*/environ 2>/dev/null | tr "\\0" " ")"; '
        'echo "host=$(hostname)"; kill -0 1 && echo "init=signalable"',
    )

    assert job.status == JobStatus.SUCCEEDED, job.error
    pids = [int(pid) for pid in printed(log, "pids").split()]
    assert max(pids) < 20  # its own PID namespace: bwrap's init, the shell and its children
    assert str(os.getpid()) not in printed(log, "pids").split() or os.getpid() < 20
    assert CANARY not in log
    assert printed(log, "host") == sandbox.SANDBOX_HOSTNAME


def test_a_step_runs_as_an_unprivileged_user_without_capabilities(account, private_workspaces):
    job, log = run_step(
        account, 'echo "uid=$(id -u)"; echo "caps=$(grep CapEff /proc/self/status | cut -f2)"'
    )

    assert job.status == JobStatus.SUCCEEDED, job.error
    uid = int(printed(log, "uid"))
    assert uid != 0
    if os.geteuid() == 0:
        assert uid == sandbox.sandbox_uid(account.pk)
    assert int(printed(log, "caps"), 16) == 0


# --- files ---------------------------------------------------------------------------------
def test_a_step_sees_no_service_file_and_writes_only_its_workspace(
    account, private_workspaces, tmp_path
):
    other = private_workspaces / f"{WORKSPACE_PREFIX}other-job"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text(CANARY)
    outside = tmp_path / "outside.txt"
    toolchain = Path(settings.OTA_TOOLCHAIN_DIR)
    var = Path(settings.VAR_DIR)
    probes = {
        "var": var,
        "secret_key": var / "secret_key",
        "other": other / "secret.txt",
        "root": Path("/root"),
        "home": Path("/home"),
        "outside": outside,
    }
    script = "".join(
        f'if [ -e "{path}" ]; then echo "{name}=visible"; else echo "{name}=absent"; fi; '
        for name, path in probes.items()
    )
    script += (
        f'echo x > "{outside}" 2>/dev/null && echo "write_outside=ok" || echo "write_outside=no"; '
        f'echo x > "{toolchain}/planted.js" 2>/dev/null && echo "write_toolchain=ok" '
        '|| echo "write_toolchain=no"; '
        'echo x > /usr/planted 2>/dev/null && echo "write_usr=ok" || echo "write_usr=no"; '
        'echo x > /tmp/mine && echo "write_tmp=ok"; '
        'echo x > "$HOME/mine" && echo "write_home=ok"; '
        'echo "shm=$(ls /dev/shm 2>/dev/null | tr "\\n" " ")"'
    )

    job, log = run_step(account, script)

    assert job.status == JobStatus.SUCCEEDED, job.error
    for name in probes:
        assert printed(log, name) == "absent", name
    assert printed(log, "write_outside") == "no" and not outside.exists()
    assert printed(log, "write_toolchain") == "no"
    assert not (toolchain / "planted.js").exists()
    assert printed(log, "write_usr") == "no"
    assert printed(log, "write_tmp") == "ok" and not Path("/tmp/mine").exists()
    assert printed(log, "write_home") == "ok"
    assert CANARY not in log
    assert not list(private_workspaces.glob(f"{WORKSPACE_PREFIX}{job.pk}-*"))  # removed


@pytest.mark.parametrize(
    ("shown", "refusal"),
    [
        (lambda: settings.VAR_DIR, "holds this installation's var/"),
        (lambda: Path(settings.VAR_DIR) / "secret_key", "is in this installation's var/"),
        (lambda: Path(settings.VAR_DIR).parent, "holds this installation's var/"),
        (lambda: workspace_root(), "holds every job's workspace"),
    ],
)
def test_a_step_is_never_shown_the_services_state_even_if_asked(
    account, private_workspaces, shown, refusal
):
    job, _ = run_step(account, "true", readable=[str(shown())])

    assert job.status == JobStatus.FAILED
    assert job.error.startswith("This step cannot run in the sandbox: ")
    assert refusal in job.error


# --- network -------------------------------------------------------------------------------
def listening_port() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server, server.getsockname()[1]


CONNECT = (
    "exec 3<>/dev/tcp/127.0.0.1/{port} 2>/dev/null && echo connect=yes || echo connect=no; "
    'echo "links=$(ls /sys/class/net 2>/dev/null; cut -d: -f1 /proc/net/dev | tail -n +3 | '
    'tr -d " " | tr "\\n" " ")"'
)


def test_a_step_without_network_has_only_its_own_loopback(account, private_workspaces):
    server, port = listening_port()
    try:
        job, log = run_step(account, "bash -c '" + CONNECT.format(port=port) + "'")
    finally:
        server.close()

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert printed(log, "connect") == "no"
    assert printed(log, "links").split() == ["lo"]


def test_a_fetching_step_keeps_the_network(account, private_workspaces):
    server, port = listening_port()
    try:
        job, log = run_step(account, "bash -c '" + CONNECT.format(port=port) + "'", network=True)
    finally:
        server.close()

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert printed(log, "connect") == "yes"


# --- limits --------------------------------------------------------------------------------
def test_a_fork_bomb_fails_the_job_naming_the_process_limit(account, private_workspaces, settings):
    if os.geteuid() != 0:
        pytest.skip("the process limit counts every process of the worker's own user")
    settings.BUILD_SANDBOX_MAX_PROCESSES = 40

    job, log = run_step(account, "bomb() { bomb | bomb & }; bomb; sleep 2; exit 1")

    assert job.status == JobStatus.FAILED, log
    assert job.error == (
        "sh was stopped by the sandbox's process limit (BUILD_SANDBOX_MAX_PROCESSES=40)"
    )
    assert no_process_of_uid(sandbox.sandbox_uid(account.pk))


def test_an_allocation_past_the_memory_limit_fails_naming_it(account, private_workspaces, settings):
    settings.BUILD_SANDBOX_MEMORY_MB = 256

    job, log = run_step(
        account,
        "node -e 'const kept = []; for (;;) kept.push(Buffer.alloc(64 * 1024 * 1024, 1))'",
    )

    assert job.status == JobStatus.FAILED, log
    assert job.error == "sh was stopped by the sandbox's memory limit (BUILD_SANDBOX_MEMORY_MB=256)"


def test_cpu_time_and_file_size_limits_are_named(account, private_workspaces, settings):
    settings.BUILD_SANDBOX_CPU_SECONDS = 1
    settings.BUILD_SANDBOX_FILE_SIZE_MB = 1

    spinning, _ = run_step(account, "exec node -e 'for (;;) {}'")
    writing, _ = run_step(account, "exec head -c 5000000 /dev/zero > big")

    assert spinning.status == JobStatus.FAILED
    assert spinning.error == (
        "sh was stopped by the sandbox's CPU time limit (BUILD_SANDBOX_CPU_SECONDS=1)"
    )
    assert writing.status == JobStatus.FAILED
    assert writing.error == (
        "sh was stopped by the sandbox's file size limit (BUILD_SANDBOX_FILE_SIZE_MB=1)"
    )


def no_process_of_uid(uid: int, seconds=10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        owned = [
            entry
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _uid_of(entry) == uid
        ]
        if not owned:
            return True
        time.sleep(0.1)
    return False


def _uid_of(entry: Path) -> int | None:
    try:
        return entry.stat().st_uid
    except OSError:
        return None


def test_a_timed_out_step_leaves_nothing_running(account, private_workspaces):
    [job] = queue_jobs(
        account,
        1,
        kind=SHELL_KIND,
        params={"script": "sleep 300 & sleep 300 & echo started; wait"},
    )
    Job.objects.filter(pk=job.pk).update(timeout_seconds=2)

    run_next_job()

    assert Job.objects.get(pk=job.pk).status == JobStatus.TIMED_OUT
    if os.geteuid() == 0:
        assert no_process_of_uid(sandbox.sandbox_uid(account.pk))


# --- a worker without a working sandbox ------------------------------------------------------
def test_a_worker_without_bwrap_fails_the_job_for_its_operator_and_runs_nothing(
    account, private_workspaces, settings, tmp_path
):
    settings.BUILD_SANDBOX_BWRAP = str(tmp_path / "no-bwrap-here")
    marker = tmp_path / "ran"

    job, _ = run_step(account, f"touch {marker}")

    assert job.status == JobStatus.FAILED
    assert job.error.startswith(
        "This worker cannot run build steps in its sandbox, so the build was not run "
        "(an operator must fix the worker): bubblewrap ("
    )
    assert "is not installed on this worker" in job.error
    assert not marker.exists()
    assert sandbox.probe().startswith("broken: bubblewrap")


def test_production_refuses_workers_with_the_sandbox_off_unless_told_it_is_safe(
    account, private_workspaces, settings, tmp_path
):
    settings.BUILD_SANDBOX = "off"
    settings.PRODUCTION = True
    marker = tmp_path / "ran"

    job, _ = run_step(account, f"touch {marker}")
    with pytest.raises(CommandError, match="BUILD_SANDBOX=off in production"):
        call_command("runcluster")
    with pytest.raises(CommandError, match="BUILD_SANDBOX=off in production"):
        call_command("runworkers")

    assert job.status == JobStatus.FAILED
    assert job.error.startswith("BUILD_SANDBOX=off in production")
    assert not marker.exists()

    settings.BUILD_SANDBOX_UNSAFE_OK = True
    job, _ = run_step(account, f"touch {marker}")
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert marker.exists()
    assert sandbox.probe() == "off"


def test_with_the_sandbox_off_a_step_still_gets_only_the_allow_listed_environment(
    account, private_workspaces, settings, monkeypatch
):
    settings.BUILD_SANDBOX = "off"
    monkeypatch.setenv("BUILDHUB_CANARY", CANARY)

    job, log = run_step(account, "env")

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert CANARY not in log


def test_workspaces_the_steps_made_unwritable_are_still_removed(account, private_workspaces):
    job, _ = run_step(account, "mkdir -p locked/inner && touch locked/inner/f && chmod 000 locked")

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert not list(private_workspaces.glob(f"{WORKSPACE_PREFIX}*"))
    assert workspace_root() == private_workspaces


def test_what_the_worker_writes_between_steps_is_writable_by_the_next_step(account, settings):
    def executor(context):
        context.run(["/bin/sh", "-c", "mkdir made-by-step && echo one > made-by-step/f"])
        (context.workspace / "made-by-worker").mkdir()  # e.g. a folder for the next step
        (context.workspace / "made-by-worker" / "input").write_text("two")
        context.run(["/bin/sh", "-c", "cat made-by-worker/input > made-by-worker/output"])
        return {"output": (context.workspace / "made-by-worker" / "output").read_text()}

    registry.register_kind("test.sandbox.between", executor, staff_only=True)
    [job] = queue_jobs(account, 1, kind="test.sandbox.between", params={})

    run_next_job()

    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result == {"output": "two"}
