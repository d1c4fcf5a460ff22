"""deploy/kubernetes and deploy/kserve: valid against the API schemas offline, and wired to what
lite_serving serves (probe routes, port, drain time, workers), checked on real servers."""

import ast
import copy
import importlib.metadata
import json
import math
import os
import re
import shutil
import signal
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

from lite_serving.process.config import parse_config  # noqa: E402
from support.deploy import (  # noqa: E402
    CONTAINERFILE,
    KSERVE,
    KUBERNETES,
    ROOT,
    env_of,
    fill_kserve_template,
    load_resources,
    only,
    run,
)
from support.http_client import request  # noqa: E402
from support.servers import ECHO, LISTENING, READY, launch  # noqa: E402

# The oldest and the newest Kubernetes whose schemas kubernetes-validate ships.
K8S_VERSIONS = (kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version())
# The KServe SDK release whose generated API models stand in for the CRD schemas (no package
# ships the CRDs themselves).
KSERVE_SDK = "kserve==0.21.0"
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


@pytest.fixture(scope="module")
def kubernetes_docs():
    return load_resources(KUBERNETES)


@pytest.fixture(scope="module")
def kserve_docs():
    return load_resources(KSERVE)


def pod_container(deployment):
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- Kubernetes -------------------------------------------------------------------------------

def test_manifests_validate_against_the_kubernetes_schemas(kubernetes_docs):
    kinds = {d["kind"] for d in kubernetes_docs}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for version in K8S_VERSIONS:
        for document in kubernetes_docs:
            kubernetes_validate.validate(document, version, strict=True)
    # The strict schemas do reject a misspelt field.
    broken = copy.deepcopy(only(kubernetes_docs, "Deployment"))
    pod_container(broken)["readinesProbe"] = pod_container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def kustomize_command():
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("neither kubectl nor kustomize is installed: the kustomization is not rendered")


def test_kustomization_renders_the_resources_with_the_image(kubernetes_docs):
    _, out, _ = run([*kustomize_command(), str(KUBERNETES)], timeout=120)
    rendered = [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert pod_container(only(rendered, "Deployment"))["image"] == \
        f"{image['newName']}:{image['newTag']}"
    assert pod_container(only(kubernetes_docs, "Deployment"))["image"] == image["name"]

    def without_image(documents):
        out = copy.deepcopy(documents)
        for d in out:
            if d["kind"] == "Deployment":
                pod_container(d).pop("image")
        return sorted(out, key=lambda d: d["kind"])

    assert without_image(rendered) == without_image(kubernetes_docs)
    for document in rendered:
        kubernetes_validate.validate(document, K8S_VERSIONS[-1], strict=True)


def containerfile_instruction(name):
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.+)$", text, re.M)
    assert found, f"no {name} in {CONTAINERFILE}"
    return found


def test_probes_port_and_scrape_target_are_what_lite_serving_serves(kubernetes_docs, serve,
                                                                     monkeypatch):
    deployment = only(kubernetes_docs, "Deployment")
    container = pod_container(deployment)
    (port,) = container["ports"]
    number = port["containerPort"]
    assert env_of(container)["LITE_SERVING_PORT"]["value"] == str(number)
    monkeypatch.setenv("LITE_SERVING_PORT", str(number))
    assert parse_config([]).port == number

    # The image listens on the same port, and checks its health on the liveness route.
    assert containerfile_instruction("EXPOSE") == [str(number)]
    assert f"LITE_SERVING_PORT={number}" in " ".join(containerfile_instruction("ENV"))
    (healthcheck,) = containerfile_instruction("HEALTHCHECK")
    assert "'/healthz'" in healthcheck and "LITE_SERVING_PORT" in healthcheck

    probes = {kind: container[kind]["httpGet"]
              for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for probe in probes.values():
        assert probe["port"] in (port["name"], number)
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(number)

    service = only(kubernetes_docs, "Service")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], number)

    server = serve(ECHO)
    for path in [p["path"] for p in probes.values()] + [annotations["prometheus.io/path"]]:
        answer = request(server, "GET", path)
        assert answer.status == 200, (path, answer)
    metrics = request(server, "GET", annotations["prometheus.io/path"])
    assert metrics.media_type() == "text/plain" and b"# TYPE" in metrics.body


def test_termination_grace_outlasts_the_prestop_pause_and_the_drain(kubernetes_docs, monkeypatch):
    pod = only(kubernetes_docs, "Deployment")["spec"]["template"]["spec"]
    container = pod_container(only(kubernetes_docs, "Deployment"))
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    pause = float(command[1])
    monkeypatch.setenv("LITE_SERVING_GRACEFUL_TIMEOUT",
                       env_of(container)["LITE_SERVING_GRACEFUL_TIMEOUT"]["value"])
    drain = parse_config([]).graceful_timeout
    assert pause > 0 and drain > 0
    assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_the_deployment_and_the_image_set_a_predict_timeout(kubernetes_docs, monkeypatch):
    """A predict that never returns must not leave the probes green: the shipped settings set
    --predict-timeout, below the liveness probe's patience for a whole stuck pod."""
    container = pod_container(only(kubernetes_docs, "Deployment"))
    monkeypatch.setenv("LITE_SERVING_PREDICT_TIMEOUT",
                       env_of(container)["LITE_SERVING_PREDICT_TIMEOUT"]["value"])
    assert parse_config([]).predict_timeout > 0
    image_env = re.search(r"^\s+LITE_SERVING_PREDICT_TIMEOUT=([0-9.]+)$", CONTAINERFILE.read_text(),
                          re.MULTILINE)
    assert image_env is not None and float(image_env.group(1)) > 0


def cpu_cores(quantity):
    """A CPU quantity rounded up to whole cores, as a resourceFieldRef with divisor 1 gives it."""
    text = str(quantity)
    return math.ceil(int(text[:-1]) / 1000 if text.endswith("m") else float(text))


def test_workers_follow_the_cpu_limit(kubernetes_docs, monkeypatch):
    container = pod_container(only(kubernetes_docs, "Deployment"))
    ref = env_of(container)["LITE_SERVING_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu" and ref["containerName"] == container["name"]
    assert str(ref.get("divisor", "1")) == "1"
    limit = container["resources"]["limits"]["cpu"]
    # What the kubelet puts in the variable, read by lite_serving as --workers.
    monkeypatch.setenv("LITE_SERVING_WORKERS", str(cpu_cores(limit)))
    assert parse_config([]).workers == cpu_cores(limit) >= 1


def test_autoscaler_budget_and_service_reach_the_pods(kubernetes_docs):
    deployment = only(kubernetes_docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector):
        return selector and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(only(kubernetes_docs, "Service")["spec"]["selector"])
    pdb = only(kubernetes_docs, "PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"]["matchLabels"])

    hpa = only(kubernetes_docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    # The autoscaler owns the replica count: a `replicas` here would reset it at every apply.
    assert "replicas" not in deployment["spec"]
    # A drain that the budget allows still leaves a pod serving.
    assert hpa["minReplicas"] > pdb["maxUnavailable"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "cpu" in pod_container(deployment)["resources"]["requests"]


# --- KServe -----------------------------------------------------------------------------------

def kserve_wheel(tmp_path_factory):
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lite-serving-tests"
    name = KSERVE_SDK.replace("==", "-")
    found = sorted(cache.glob(f"{name}-*.whl"))
    if found:
        return found[0]
    target = tmp_path_factory.mktemp("kserve-sdk")
    code, out, err = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                          "-d", str(target), KSERVE_SDK], timeout=300, check=False)
    wheels = sorted(target.glob(f"{name}-*.whl"))
    if code != 0 or not wheels:
        pytest.skip(f"the KServe SDK wheel ({KSERVE_SDK}) could not be downloaded: {err[-500:]}")
    cache.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(wheels[0], cache / wheels[0].name))


def sdk_models(wheel):
    """``{class: (json fields {key: SDK type}, required keys)}`` of the SDK's generated API models,
    read from their source (the modules are not imported: they need the SDK's dependencies)."""
    models = {}
    with zipfile.ZipFile(wheel) as archive:
        for path in archive.namelist():
            if not (path.startswith("kserve/models/") and path.endswith(".py")):
                continue
            for cls in ast.parse(archive.read(path)).body:
                if not isinstance(cls, ast.ClassDef):
                    continue
                tables, required = {}, set()
                for node in cls.body:
                    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                        tables[node.targets[0].id] = node.value
                    elif isinstance(node, ast.FunctionDef) and any(
                            isinstance(c, ast.Constant) and "must not be `None`" in str(c.value)
                            for c in ast.walk(node)):
                        required.add(node.name)
                if "openapi_types" in tables:
                    types = ast.literal_eval(tables["openapi_types"])
                    keys = ast.literal_eval(tables["attribute_map"])
                    models[cls.name] = ({keys[a]: t for a, t in types.items()},
                                        {keys[a] for a in required if a in keys})
    return models


def k8s_definition(sdk_type, definitions):
    """The Kubernetes definition an SDK type names (``V1Container`` → io.k8s.api.core.v1.Container)."""
    m = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d+(?:(?:alpha|beta)\d+)?)(\w+)", sdk_type)
    if m:
        key = f"io.k8s.api.{m.group(1).lower()}.{m.group(2).lower()}.{m.group(3)}"
        return key if key in definitions else None
    m = re.fullmatch(r"V1([A-Z]\w*)", sdk_type)
    if not m:
        return None
    for prefix in ("io.k8s.api.core.v1.", "io.k8s.apimachinery.pkg.apis.meta.v1."):
        if prefix + m.group(1) in definitions:
            return prefix + m.group(1)
    matches = [k for k in definitions if k.endswith(".v1." + m.group(1))]
    return matches[0] if len(matches) == 1 else None


def kserve_schema(models, definitions):
    """A JSON schema of every SDK model (closed objects, required fields), Kubernetes types by
    reference to kubernetes-validate's strict definitions. Knative and KEDA types stay open."""
    def schema_of(sdk_type):
        if sdk_type.startswith("list["):
            return {"type": "array", "items": schema_of(sdk_type[5:-1])}
        if sdk_type.startswith("dict(str, "):
            return {"type": "object", "additionalProperties": schema_of(sdk_type[10:-1])}
        plain = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
                 "float": {"type": "number"}, "datetime": {"type": "string"}, "object": {}}
        if sdk_type in plain:
            return plain[sdk_type]
        if sdk_type == "ResourceQuantity":
            return {"$ref": f"{K8S_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity"}
        if sdk_type in models:
            return {"$ref": f"#/$defs/{sdk_type}"}
        key = k8s_definition(sdk_type, definitions)
        return {"$ref": f"{K8S_DEFINITIONS}#/$defs/{key}"} if key else {}

    return {"$defs": {name: {"type": "object",
                             "properties": {k: schema_of(t) for k, t in fields.items()},
                             "required": sorted(required), "additionalProperties": False}
                      for name, (fields, required) in models.items()}}


@pytest.fixture(scope="module")
def kserve_validator(tmp_path_factory):
    """validate(document): checks a KServe resource against the SDK's model of its kind."""
    models = sdk_models(kserve_wheel(tmp_path_factory))
    strict = f"v{K8S_VERSIONS[-1]}-local-strict"
    with resources.as_file(resources.files("kubernetes_validate") / "kubernetes-json-schema"
                           / strict / "_definitions.json") as path:
        definitions = json.loads(Path(path).read_text())
    assert definitions["$id"] == K8S_DEFINITIONS
    schema = kserve_schema(models, definitions["$defs"])
    registry = referencing.Registry().with_resource(
        K8S_DEFINITIONS, referencing.Resource.from_contents(definitions))

    def validate(document):
        version = document["apiVersion"].split("/")[1]
        model = version[0].upper() + version[1:] + document["kind"]
        assert model in models, f"the KServe SDK has no model {model}"
        jsonschema.Draft202012Validator(dict(schema, **{"$ref": f"#/$defs/{model}"}),
                                        registry=registry).validate(document)
    return validate


def test_kserve_resources_validate_against_the_kserve_api(kserve_docs, kserve_validator):
    kinds = {d["kind"] for d in kserve_docs}
    assert kinds == {"ServingRuntime", "InferenceService"}
    for document in kserve_docs:
        kserve_validator(document)
    # Misspelt fields are rejected, in KServe's own objects and in the Kubernetes ones inside.
    isvc = copy.deepcopy(only(kserve_docs, "InferenceService"))
    isvc["spec"]["predictor"]["model"]["protocolVersions"] = ["v2"]
    with pytest.raises(jsonschema.ValidationError):
        kserve_validator(isvc)
    runtime = copy.deepcopy(only(kserve_docs, "ServingRuntime"))
    runtime["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError):
        kserve_validator(runtime)


def test_inference_service_selects_the_runtime(kserve_docs):
    runtime = only(kserve_docs, "ServingRuntime")
    model = only(kserve_docs, "InferenceService")["spec"]["predictor"]["model"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert "onnx" in formats and len(formats) >= 2
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in formats
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert model["protocolVersion"] == "v2"
    assert model["storageUri"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"


@pytest.mark.parametrize("model_format", ["lite-serving", "onnx"])
def test_lite_serving_serves_what_the_runtime_passes(kserve_docs, tmp_path, model_format,
                                                     monkeypatch):
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    runtime = only(kserve_docs, "ServingRuntime")
    assert model_format in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    (container,) = runtime["spec"]["containers"]
    (port,) = container["ports"]

    # `lite-serving` is the installed command that runs lite_serving's __main__.
    (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts")
                 if e.name == container["command"][0]]
    assert script.value == "lite_serving.__main__:main" and len(container["command"]) == 1

    args = [fill_kserve_template(a, "iris") for a in container["args"]]
    assert args[0] == "/mnt/models"
    static_env = {k: v["value"] for k, v in env_of(container).items() if "value" in v}
    for name, value in static_env.items():
        monkeypatch.setenv(name, value)
    config = parse_config(args[1:])
    assert (config.port, config.model_name) == (port["containerPort"], "iris")
    assert config.graceful_timeout < 30   # the pod's default termination grace period
    assert config.predict_timeout > 0     # a stuck predict becomes a 504 and a failing probe

    iris = ROOT / "examples" / "iris"
    models = tmp_path / "models"        # stands for /mnt/models
    if model_format == "onnx":
        models.mkdir()
        shutil.copy(iris / "model.onnx", models / "model.onnx")
    else:
        shutil.copytree(iris, models)
    # The runtime's own arguments, then a free port on loopback for the test.
    server = launch(models, *args[1:], "--host", "127.0.0.1", "--port", "0", env=static_env)
    try:
        server.port = int(server.wait_for(LISTENING).group(3))
        server.wait_for(READY, timeout=60)
        probes = [container[p]["httpGet"] for p in ("startupProbe", "readinessProbe", "livenessProbe")]
        for probe in probes:
            assert probe["port"] == port["containerPort"]
            assert request(server, "GET", probe["path"]).status == 200, probe
        annotations = runtime["spec"]["annotations"]
        assert annotations["prometheus.kserve.io/port"] == str(port["containerPort"])
        assert request(server, "GET", annotations["prometheus.kserve.io/path"]).status == 200
        assert request(server, "GET", "/v2/models/iris/ready").status == 200

        features = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        body = json.dumps({"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32",
                                       "data": features}]})
        answer = request(server, "POST", "/v2/models/iris/infer",
                         {"Content-Type": "application/json"}, body)
        assert answer.status == 200, answer
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        labels, _ = ort.InferenceSession(str(iris / "model.onnx")).run(
            None, {"features": np.array(features, dtype=np.float32)})
        assert outputs["label"]["data"] == labels.tolist()
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log


def test_every_deployment_states_its_production_settings(kubernetes_docs, kserve_docs):
    """The traceback page stays off and the access log on, whatever a default becomes."""
    containers = [pod_container(d) for d in kubernetes_docs if d["kind"] == "Deployment"]
    containers += [c for d in kserve_docs if d["kind"] == "ServingRuntime"
                   for c in d["spec"]["containers"]]
    assert len(containers) == 2
    for container in containers:
        env = env_of(container)
        assert env["LITE_SERVING_DEV"]["value"] == "0"
        assert env["LITE_SERVING_ACCESS_LOG"]["value"] == "1"
    (image_env,) = containerfile_instruction("ENV")
    assert "LITE_SERVING_DEV=0" in image_env and "LITE_SERVING_ACCESS_LOG=1" in image_env
