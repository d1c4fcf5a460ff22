"""The compiled modules on ARM: tools/cross/run.sh for armv7 (armhf) and aarch64 (arm64).

The script cross-compiles parser_c, codec_c and json_c for the CPU (-Wall -Wextra: no warning in
our code), then runs their in-process tests under qemu-user in a Debian root filesystem. 32-bit
platforms are where sizes overflow first (Py_ssize_t is 32 bits there): the size tests of
test_codec and test_parser run at those limits only there.

Slow (a few minutes per CPU, more the first time, while the root filesystems are made) and
marked so: ``pytest -m "not slow"`` leaves it out. Under CI (CI=true) it installs the tools it
needs and runs; elsewhere, without the tools, it skips and says which are missing.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "cross" / "run.sh"
TOOLS = {"mmdebstrap": "mmdebstrap", "qemu-arm-static": "qemu-user-static",
         "qemu-aarch64-static": "qemu-user-static", "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf",
         "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}
IN_CI = os.environ.get("CI", "") == "true"
HANG = 3600  # seconds: a guard against a hung emulator, far past any normal run


def missing_tools():
    missing = sorted({package for command, package in TOOLS.items() if not shutil.which(command)})
    try:
        import Cython  # noqa: F401
    except ImportError:
        missing.append("Cython (pip)")
    return missing


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["armhf", "arm64"])
def test_compiled_modules_under_emulation(arch):
    missing = missing_tools()
    if missing and not IN_CI:
        pytest.skip(f"needs {', '.join(missing)}: apt-get install them, or run "
                    f"tools/cross/run.sh --install as root")
    command = ["bash", str(SCRIPT), arch] + (["--install"] if IN_CI else [])
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(output)  # shown by pytest when the test fails
    assert proc.returncode == 0, f"tools/cross/run.sh {arch} exited {proc.returncode}:\n{output[-6000:]}"
