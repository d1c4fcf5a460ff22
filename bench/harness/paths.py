"""Where things live. Everything generated goes under ``.venvs/`` and ``.work/``."""

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
VENVS_DIR = BENCH_DIR / ".venvs"
WORK_DIR = BENCH_DIR / ".work"
LOG_DIR = WORK_DIR / "logs"
SERVERS_DIR = BENCH_DIR / "servers"
# the echo app, served by every server under test: the example users start from
ECHO_DIR = REPO_ROOT / "examples" / "echo"
TOOLS_DIR = BENCH_DIR / "tools"
WRK_SCRIPT = BENCH_DIR / "lua" / "post.lua"
RESULTS_DIR = BENCH_DIR / "results"
