"""A node of the fleet: the chaos drill's Services with a var dir and workspace root of its own.

Nodes share the PostgreSQL, Redis and S3 server the drill starts; everything else (web port,
BUILDHUB_VAR_DIR, JOB_WORKSPACE_ROOT, logs) is the node's, as on separate machines.
"""

from pathlib import Path

from tests.chaos.stack import Services


class Node(Services):
    def __init__(self, name: str, shared_env: dict, directory: Path):
        self.name = name
        self.directory = directory
        self.var_dir = directory / "var"
        self.workspaces = directory / "workspaces"
        logs = directory / "logs"
        for path in (self.var_dir, self.workspaces, logs):
            path.mkdir(parents=True, exist_ok=True)
        env = {
            **shared_env,
            "BUILDHUB_VAR_DIR": str(self.var_dir),
            "JOB_WORKSPACE_ROOT": str(self.workspaces),
        }
        super().__init__(env, logs)
        self.ws = f"ws://127.0.0.1:{self.port}"

    def start(self, clusters: int) -> None:
        self.start_web()
        self.start_supervisor(clusters)

    def workspaces_left(self) -> int:
        return len(list(self.workspaces.rglob("buildhub-job-*")))
