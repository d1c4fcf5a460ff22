"""Shared by the deploy/ tests: the manifests as data, commands in their own session, waiting for a port.

No tests here.
"""

import os
import re
import signal
import subprocess
from pathlib import Path

import yaml

from support.http_client import request
from support.waits import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KSERVE = DEPLOY / "kserve"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"


def load_resources(directory):
    """The documents of every file ``directory/kustomization.yaml`` lists, in order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((directory / name).read_text()) if d]
    return documents


def only(documents, kind):
    """The one document of ``kind``."""
    found = [d for d in documents if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(container):
    """``{name: entry}`` of a container's ``env`` list."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def fill_kserve_template(text, name, namespace="default"):
    """What KServe makes of ``{{.Name}}``/``{{.Namespace}}`` (Go templates over the
    InferenceService's metadata) in a ServingRuntime container; any other template is an error."""
    text = re.sub(r"\{\{\s*\.Name\s*\}\}", name, text)
    text = re.sub(r"\{\{\s*\.Namespace\s*\}\}", namespace, text)
    assert "{{" not in text, f"a template these tests do not know: {text!r}"
    return text


def run(argv, env=None, timeout=600, check=True):
    """Run a command in its own session; (return code, stdout, stderr). A command that outlives
    ``timeout`` is killed with everything it started."""
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{argv[:3]} still running after {timeout} s:\n{out[-3000:]}{err[-3000:]}") from None
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
                             f"{out[-4000:]}\n{err[-4000:]}")
    return proc.returncode, out, err


def wait_ready(port, path="/readyz", limit=120.0, running=lambda: True, host="127.0.0.1"):
    """Poll ``GET path`` until it answers 200; refused connections (still loading) are retried.
    ``running()`` false means the server is gone: stop waiting."""
    def answer():
        try:
            reply = request(host, "GET", path, port=port, timeout=5)
        except OSError:
            return None
        return reply if reply.status == 200 else None

    return wait_until(answer, limit, what=f"GET {path} on port {port} answering 200", interval=0.1,
                      give_up=lambda: not running())
