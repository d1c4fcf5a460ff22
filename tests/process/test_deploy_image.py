"""deploy/container: the images of examples/echo and examples/iris, built by deploy/build.sh with
podman and run for real — predict, v2 infer, the KServe way of starting, SIGTERM during a request —
and their sizes beside the reference (openbayes-serving) built the same way on the same base.

No registry is reachable from CI, so the base image is made here: Debian's python3 and python3-venv
by mmdebstrap, imported into podman. podman, runc and mmdebstrap come from apt-get when they are
missing and the tests run as root; without them (or when podman cannot run containers here) the
tests are skipped and say why.

Every image a run makes is named for that run (so that runs at the same time do not share one),
built without intermediate layers (a multi-stage build otherwise keeps each stage as an untagged
image), and removed with its containers at the end of the session, whatever the tests' outcome.
LITE_SERVING_TEST_KEEP_BASE=1 keeps the base image under a fixed name instead, made once and
reused by later runs (it takes mmdebstrap and Debian's archive to make).
"""

import json
import os
import shutil
import socket
import sys
import textwrap
import time
import uuid
from types import SimpleNamespace

import pytest

from support.deploy import (
    DEPLOY,
    KSERVE,
    KUBERNETES,
    ROOT,
    fill_kserve_template,
    load_resources,
    only,
    run,
    wait_ready,
)
from support.http_client import Connection, post_json, request
from support.waits import wait_until

pytestmark = pytest.mark.slow   # builds container images (minutes)

RUN = uuid.uuid4().hex[:8]   # in the names of this session's images
KEEP_BASE = os.environ.get("LITE_SERVING_TEST_KEEP_BASE") == "1"
BASE_IMAGE = ("localhost/lite-serving-test-base:bookworm" if KEEP_BASE
              else f"localhost/lite-serving-test-base-{RUN}:bookworm")
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
IMAGE_PREFIX = "localhost/lite-serving-test-"
CONTAINER_LABEL = "lite-serving-test"
REFERENCE = "openbayes-serving==0.5.0"

# The reference served the same way: a virtual environment without pip on the same base.
REFERENCE_CONTAINERFILE = f"""\
ARG BASE
FROM ${{BASE}} AS venv
RUN --mount=type=secret,id=pip-ca set -eu; \\
    [ ! -f /run/secrets/pip-ca ] || export PIP_CERT=/run/secrets/pip-ca; \\
    python3 -m venv /tmp/pip-env; \\
    python3 -m venv --without-pip /opt/venv; \\
    /tmp/pip-env/bin/pip --python /opt/venv/bin/python install --no-cache-dir {REFERENCE}
FROM ${{BASE}}
COPY --from=venv /opt/venv/ /opt/venv/
COPY model/ /model/
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /model
USER 10001:10001
ENTRYPOINT ["python", "predictor.py"]
"""

SLOW_PREDICTOR = """
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def predict(self, json):
            print("PREDICT-START", file=sys.stderr, flush=True)
            time.sleep(json["sleep"])
            return {"slept": json["sleep"]}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


class Podman:
    """podman with the settings these tests need; every container it starts is removed at the end."""

    def __init__(self, conf, runtime):
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.command = ["podman"] + (["--runtime", runtime] if runtime else [])
        self.containers = []
        self.images = []            # made by this session: removed at its end
        self.report = []            # lines for the terminal summary

    def __call__(self, *args, timeout=600, check=True):
        return run([*self.command, *args], env=self.env, timeout=timeout, check=check)

    def size(self, image):
        return int(self("image", "inspect", "--format", "{{.Size}}", image)[1])

    def start(self, image, *args, port, env=(), options=()):
        """``podman run -d`` on the host's network, lite_serving on ``port``; returns the name.
        Locked down as deploy/kubernetes runs it: read-only root (a writable /tmp), no
        capabilities, no privilege escalation."""
        name = f"lite-serving-test-{uuid.uuid4().hex[:10]}"
        self.containers.append(name)
        env_flags = [f for item in [f"LITE_SERVING_PORT={port}", *env] for f in ("-e", item)]
        self("run", "-d", "--name", name, "--label", CONTAINER_LABEL, "--network", "host",
             "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
             *env_flags, *options, image, *args)
        return name

    def running(self, name):
        code, out, _ = self("inspect", "--format", "{{.State.Running}}", name, check=False)
        return code == 0 and out.strip() == "true"

    def logs(self, name):
        _, out, err = self("logs", name, check=False)
        return out + err

    def made(self, image):
        """Note ``image`` (before it is made: a build that fails half-way is removed too)."""
        self.images.append(image)
        return image

    def remove_containers(self):
        while self.containers:
            self("rm", "--force", "--time", "0", self.containers.pop(), check=False, timeout=60)

    def remove_all(self):
        """The containers started, then the images made (the last made first)."""
        self.remove_containers()
        for image in reversed(self.images):
            self("rmi", "--force", image, check=False, timeout=120)

    def remove_leftovers(self):
        """Containers that an interrupted earlier run left behind, by their IDs."""
        found = self("ps", "--all", "--quiet", "--filter", f"label={CONTAINER_LABEL}")[1].split()
        for container in found:
            self("rm", "--force", "--time", "0", container, check=False, timeout=60)


def install_tools():
    """podman, runc and mmdebstrap from apt-get when missing; skips when they cannot be had.
    Returns what was done, for the report."""
    missing = [tool for tool in ("podman", "mmdebstrap") if not shutil.which(tool)]
    if not missing:
        return "podman and mmdebstrap already installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{' and '.join(missing)} not installed, and installing them needs root and "
                    "apt-get: the container images are not built")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    started = time.monotonic()
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "podman", "runc", "mmdebstrap"]):
        code, out, err = run(argv, env=env, timeout=900, check=False)
        if code != 0:
            pytest.skip(f"{' '.join(argv)} failed, so podman cannot run here: {(out + err)[-800:]}")
    return f"podman, runc and mmdebstrap installed by apt-get in {time.monotonic() - started:.0f} s"


def base_image(podman, workdir):
    """Debian bookworm with python3 and python3-venv, made once and kept in podman's storage."""
    if podman("image", "exists", BASE_IMAGE, check=False)[0] == 0:
        return "kept from an earlier run"
    started = time.monotonic()
    rootfs = workdir / "rootfs.tar"
    code, out, err = run(["mmdebstrap", "--variant=apt", f"--include={BASE_PACKAGES}", "bookworm",
                          str(rootfs)], timeout=900, check=False)
    if code != 0:
        pytest.skip(f"mmdebstrap could not make the base image (Debian's archive unreachable?): "
                    f"{(out + err)[-800:]}")
    podman("import", str(rootfs), BASE_IMAGE if KEEP_BASE else podman.made(BASE_IMAGE))
    rootfs.unlink()
    return f"made in {time.monotonic() - started:.0f} s"


@pytest.fixture(scope="session")
def podman(tmp_path_factory, request):
    tools = install_tools()
    workdir = tmp_path_factory.mktemp("podman")
    conf = workdir / "containers.conf"
    # The default nofile/nproc ulimits cannot be set inside this machine's sandbox.
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    tool = Podman(conf, "runc" if shutil.which("runc") else None)
    code, out, err = tool("info", check=False, timeout=120)
    if code != 0:
        pytest.skip(f"podman cannot run here: {(out + err)[-800:]}")
    tool.remove_leftovers()
    try:
        tool.report.append(tools)
        tool.report.append(f"base image {BASE_IMAGE} ({BASE_PACKAGES}): {base_image(tool, workdir)}, "
                           f"{tool.size(BASE_IMAGE) / 1e6:.1f} MB")
        request.config.pluginmanager.register(SizeReport(tool), "lite-serving-image-report")
        yield tool
    finally:
        tool.remove_all()


@pytest.fixture(autouse=True)
def containers_removed(request):
    """The containers a test started are removed at its end (the images at the session's)."""
    yield
    tool = request.node.funcargs.get("podman")   # absent when the test did not get that far
    if tool is not None:
        tool.remove_containers()


class SizeReport:
    """Prints what the image tests measured at the end of the run."""

    def __init__(self, podman):
        self.podman = podman

    def pytest_terminal_summary(self, terminalreporter):
        if self.podman.report:
            terminalreporter.section("container images")
            for line in self.podman.report:
                terminalreporter.write_line(line)


def build(podman, model_dir, tag):
    """deploy/build.sh for ``model_dir`` on the test base; returns the image name."""
    image = podman.made(f"{IMAGE_PREFIX}{tag}-{RUN}")
    started = time.monotonic()
    run(["bash", str(DEPLOY / "build.sh"), str(ROOT / model_dir), image],
        env=dict(podman.env, ENGINE=" ".join(podman.command), BASE=BASE_IMAGE,
                 BUILD_OPTS="--network host --layers=false"), timeout=900)
    podman.report.append(f"{image}: built in {time.monotonic() - started:.0f} s")
    return image


def build_options():
    """``podman build`` options as deploy/build.sh gives them here: the test base, the host's
    network, and the CA bundle pip is configured with as the ``pip-ca`` secret."""
    ca = os.environ.get("PIP_CERT") or (run([sys.executable, "-m", "pip", "config", "get",
                                             "global.cert"], check=False)[1].strip().strip("'"))
    secret = ["--secret", f"id=pip-ca,src={ca}"] if ca and os.path.isfile(ca) else []
    return ["--format", "docker", "--network", "host", "--layers=false", *secret,
            "--build-arg", f"BASE={BASE_IMAGE}"]


@pytest.fixture(scope="session")
def echo_image(podman):
    return build(podman, "examples/echo", "echo")


@pytest.fixture(scope="session")
def iris_image(podman):
    return build(podman, "examples/iris", "iris")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(podman, name, port, path="/readyz"):
    wait_ready(port, path, running=lambda: podman.running(name))
    return SimpleNamespace(host="127.0.0.1", port=port)


def test_echo_image_is_built_as_specified(podman, echo_image):
    (inspected,) = json.loads(podman("image", "inspect", echo_image)[1])
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["lite-serving"] and config["Cmd"] == ["/model"]
    assert list(config["ExposedPorts"]) == ["8080/tcp"]
    assert "LITE_SERVING_PORT=8080" in config["Env"]
    assert "/healthz" in " ".join(inspected["Healthcheck"]["Test"])
    # No compiler and no pip in the image; lite_serving runs on its compiled parser.
    out = podman("run", "--rm", "--network", "host", "--entrypoint", "sh", echo_image, "-c",
                 "command -v gcc cc pip pip3; echo ---; ls /opt/venv/bin /opt/venv/lib/*/site-packages;"
                 " echo ---; python -c 'import lite_serving.http.parser_c as p; print(p.__file__)'")[1]
    commands, installed, parser = out.split("---\n")
    assert commands.strip() == "", out
    assert "lite-serving" in installed.split() and "orjson" in installed.split(), out
    assert not [n for n in installed.split() if n.startswith(("pip", "setuptools"))], out
    assert parser.strip().endswith(".so"), out


def test_echo_image_serves_and_reports_healthy(podman, echo_image):
    port = free_port()
    name = podman.start(echo_image, port=port)
    server = serving(podman, name, port)
    answer = post_json(server, {"values": [1, 2, 3], "text": "ünïcode"})
    assert answer.status == 200 and answer.json() == {"values": [1, 2, 3], "text": "ünïcode"}
    assert request(server, "GET", "/healthz").status == 200
    assert podman("healthcheck", "run", name, check=False)[0] == 0
    top = podman("top", name, "pid", "user", "args")[1]
    pid1 = [line for line in top.splitlines()[1:] if line.split()[0] == "1"]
    assert pid1 and "lite-serving /model" in pid1[0] and "serving" in pid1[0], top


def test_sigterm_during_a_request_answers_it_and_exits_0(podman, echo_image, tmp_path):
    model = tmp_path / "slow"
    model.mkdir()
    (model / "predictor.py").write_text(textwrap.dedent(SLOW_PREDICTOR))
    model.chmod(0o755)
    (model / "predictor.py").chmod(0o644)
    port = free_port()
    name = podman.start(echo_image, port=port, options=["-v", f"{model}:/model:ro"])
    serving(podman, name, port)

    body = json.dumps({"sleep": 2}).encode()
    with Connection("127.0.0.1", port, timeout=60) as conn:
        conn.request("POST", "/", {"Content-Type": "application/json"}, body)
        wait_until(lambda: "PREDICT-START" in podman.logs(name), 60,
                   what="the predict started in the container")
        podman("kill", "--signal", "TERM", name)
        answer = conn.read_response()
    assert answer.status == 200 and answer.json() == {"slept": 2}
    code = podman("wait", name, timeout=120)[1].strip()
    assert code == "0", podman.logs(name)
    assert "shutting down" in podman.logs(name)


def test_iris_image_predicts_and_speaks_v2(podman, iris_image):
    port = free_port()
    name = podman.start(iris_image, port=port)
    server = serving(podman, name, port)
    answer = post_json(server, {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]})
    assert answer.status == 200, answer
    assert answer.json()["classes"] == ["setosa", "virginica"]
    infer = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                         "data": [5.1, 3.5, 1.4, 0.2]}]}
    answer = post_json(server, infer, target="/v2/models/model/infer")
    assert answer.status == 200, answer
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["label"]["data"] == [0]
    # Every route the Kubernetes manifests probe or scrape answers in the image.
    deployment = only(load_resources(KUBERNETES), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    paths = [container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe",
                                                       "livenessProbe")]
    paths.append(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    for path in paths:
        assert request(server, "GET", path).status == 200, path


def test_iris_image_runs_as_the_kserve_runtime(podman, iris_image):
    runtime = only(load_resources(KSERVE), "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    args = [fill_kserve_template(a, "iris") for a in container["args"]]
    env = [f"{k['name']}={k['value']}" for k in container["env"] if "value" in k]
    port = free_port()
    # KServe's storage initializer leaves the model in /mnt/models, read-only for the server.
    name = podman.start(iris_image, *args, f"--port={port}", port=port, env=env,
                        options=["--entrypoint", container["command"][0],
                                 "-v", f"{ROOT / 'examples' / 'iris'}:/mnt/models:ro"])
    server = serving(podman, name, port, container["readinessProbe"]["httpGet"]["path"])
    assert request(server, "GET", "/v2/models/iris/ready").status == 200
    infer = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                         "data": [6.7, 3.0, 5.2, 2.3]}]}
    answer = post_json(server, infer, target="/v2/models/iris/infer")
    assert answer.status == 200, answer
    assert answer.json()["model_name"] == "iris"
    podman("stop", "--time", "30", name)
    assert podman("wait", name)[1].strip() == "0"


def test_image_adds_a_fifth_of_what_the_reference_adds(podman, echo_image, iris_image, tmp_path):
    context = tmp_path / "reference"
    shutil.copytree(ROOT / "examples" / "echo", context / "model")
    (context / "Containerfile").write_text(REFERENCE_CONTAINERFILE)
    reference = podman.made(f"{IMAGE_PREFIX}reference-echo-{RUN}")
    started = time.monotonic()
    podman("build", *build_options(), "-t", reference, str(context), timeout=900)
    built_in = time.monotonic() - started

    # The reference image does serve the same predictor.
    port = free_port()
    name = podman.start(reference, "--port", str(port), port=port)
    server = serving(podman, name, port, "/")
    assert post_json(server, {"x": 1}).json() == {"x": 1}

    base = podman.size(BASE_IMAGE)
    lite = podman.size(echo_image) - base
    ref = podman.size(reference) - base
    iris = podman.size(iris_image)
    podman.report.append(f"{reference}: built in {built_in:.0f} s")
    podman.report.append(
        f"examples/echo on the base ({base / 1e6:.1f} MB): lite_serving adds {lite / 1e6:.2f} MB, "
        f"the reference ({REFERENCE}) adds {ref / 1e6:.2f} MB: {lite / ref:.3f} of it")
    podman.report.append(f"examples/iris (with numpy and onnxruntime): {iris / 1e6:.1f} MB, "
                         f"{(iris - base) / 1e6:.1f} MB over the base")
    assert 0 < lite * 5 < ref, (lite, ref)


def test_build_script_refuses_what_it_cannot_build(tmp_path):
    script = ["bash", str(DEPLOY / "build.sh")]
    code, out, err = run([*script, str(ROOT / "examples" / "nowhere")], check=False)
    assert code == 2 and "is not a directory" in err
    code, out, err = run([*script, str(tmp_path)], check=False)
    assert code == 2 and "must be a directory inside" in err and str(ROOT) in err
    code, out, err = run([*script, str(ROOT)], check=False)
    assert code == 2 and "must be a directory inside" in err
    code, out, err = run([*script], check=False)
    assert code == 2 and "usage: deploy/build.sh MODEL_DIR [IMAGE]" in err
    code, out, err = run([*script, "--help"], check=False)
    assert code == 0 and "BASE" in out + err
    code, out, err = run([*script, str(ROOT / "examples" / "echo")], check=False,
                         env=dict(os.environ, ENGINE="podman", PIP_CA=str(tmp_path / "none.pem")))
    assert code == 2 and "the CA bundle" in err and "PIP_CA" in err


def test_containerfile_asks_for_the_model_directory(podman, echo_image):
    code, out, err = podman("build", *build_options(), "-f", str(DEPLOY / "container" / "Containerfile"),
                            str(ROOT), check=False, timeout=900)
    assert code != 0 and "--build-arg MODEL_DIR=" in out + err
