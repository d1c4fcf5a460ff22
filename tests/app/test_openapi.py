"""GET /openapi.json (valid OpenAPI 3.1, checked by openapi-spec-validator) and GET /docs, as
routes: what they describe, who may read them, --no-docs."""

import re

import pytest
from openapi_spec_validator import validate

from support.http_client import request
from support.servers import serve_to_exit

DECLARED = """
    import openbayes_serving as serv


    class Predictor:
        \"\"\"Doubles numbers.\"\"\"

        input_schema = {"type": "object", "required": ["values"],
                        "properties": {"values": {"type": "array", "items": {"type": "number"}}}}
        output_schema = {"type": "object", "properties": {"doubled": {"type": "array"}}}
        input_example = {"values": [1, 2, 3]}

        def predict(self, json):
            return {"doubled": [v * 2 for v in json["values"]]}


    if __name__ == "__main__":
        serv.run(Predictor)
"""

UPLOADS = """
    import openbayes_serving as serv


    class Predictor:
        async def predict(self, request):
            return {"size": len(request.files["file"].read())}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def description(server, headers=None):
    answer = request(server, "GET", "/openapi.json", headers)
    assert answer.status == 200, answer
    assert answer.media_type() == "application/json"
    doc = answer.json()
    validate(doc)   # raises on anything that is not valid OpenAPI 3.1
    return doc


def test_the_description_is_valid_openapi_31_with_the_declared_schemas(serve):
    doc = description(serve(DECLARED))
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Predictor"
    post = doc["paths"]["/"]["post"]
    body = post["requestBody"]["content"]
    assert body["application/json"]["schema"]["required"] == ["values"]
    assert body["application/json"]["example"] == {"values": [1, 2, 3]}
    assert body["application/msgpack"]["schema"] == body["application/json"]["schema"]
    answers = post["responses"]["200"]["content"]
    assert answers["application/json"]["schema"] == {"type": "object",
                                                     "properties": {"doubled": {"type": "array"}}}
    assert set(answers) == {"application/json", "application/msgpack"}
    assert "Doubles numbers." in post["description"]
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs"):
        assert "get" in doc["paths"][path], path
    assert "security" not in doc
    assert not any(path.startswith("/v2/models") for path in doc["paths"])


def test_a_predictor_reading_uploads_is_described_with_a_form_body(serve):
    doc = description(serve(UPLOADS))
    body = doc["paths"]["/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body
    assert doc["x-lite-serving"]["reads"] == ["request"] and doc["x-lite-serving"]["async"] is True


def test_an_onnx_model_is_described_with_its_v2_routes(serve, tmp_path):
    pytest.importorskip("onnxruntime")
    from support.iris import serve_bare_model
    server = serve_bare_model(tmp_path / "bare")
    try:
        doc = description(server)
    finally:
        server.stop()
    infer = doc["paths"]["/v2/models/iris/infer"]["post"]
    tensors = infer["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]
    (features,) = tensors["items"]["oneOf"]
    assert features["properties"]["name"] == {"const": "features"}
    assert features["properties"]["datatype"] == {"const": "FP32"}
    assert features["properties"]["shape"]["prefixItems"][1] == {"const": 4}
    example = infer["requestBody"]["content"]["application/json"]["example"]["inputs"][0]
    assert example == {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}
    outputs = infer["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert {o["properties"]["name"]["const"] for o in outputs["outputs"]["items"]["oneOf"]} == \
        {"label", "probabilities"}
    assert "features (FP32 [-1, 4])" in infer["description"]
    model = doc["x-lite-serving"]["model"]
    assert model["name"] == "iris" and model["inputs"] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    for path in ("/v2", "/v2/models/iris", "/v2/models/iris/ready"):
        assert path in doc["paths"]
    # zero-code serving: POST / gets an example built from the model's inputs
    simple = doc["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]
    assert simple["example"] == {"inputs": {"features": [[0, 0, 0, 0]]}}


def test_with_api_keys_the_description_needs_one_and_the_page_does_not(serve):
    server = serve(DECLARED, "--api-key", "docs-key")
    refused = request(server, "GET", "/openapi.json")
    assert refused.status == 401
    doc = description(server, {"X-API-Key": "docs-key"})
    assert doc["security"] == [{"bearer": []}, {"apiKey": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in doc["paths"]["/"]["post"]["responses"]
    assert doc["paths"]["/metrics"]["get"]["security"] == []   # open unless --protect-metrics
    page = request(server, "GET", "/docs")
    assert page.status == 200 and page.media_type() == "text/html"


def test_the_page_is_self_contained(serve):
    server = serve(DECLARED)
    page = request(server, "GET", "/docs")
    assert page.status == 200
    html = page.text()
    # nothing is loaded from anywhere: no src/href attribute, no @import, and a CSP that forbids it
    assert not re.search(r"""\b(src|href)\s*=\s*["']""", html), html
    assert "@import" not in html and "//" not in re.sub(r"//.*|https?:", "", html.split("<script>")[0])
    csp = page.header("content-security-policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert len(page.body) < 16 * 1024
    assert request(server, "HEAD", "/docs").status == 200
    assert request(server, "POST", "/docs").status == 405


def test_no_docs_turns_both_routes_off(serve):
    server = serve(DECLARED, "--no-docs")
    assert request(server, "GET", "/openapi.json").status == 404
    assert request(server, "GET", "/docs").status == 404


def test_a_schema_that_is_not_a_dict_stops_start_up(tmp_path):
    source = DECLARED.replace('output_schema = {"type": "object", "properties": {"doubled": {"type": "array"}}}',
                              'output_schema = "object"')
    code, output = serve_to_exit(tmp_path / "bad", source)
    assert code == 1 and ".output_schema is str; it must be a JSON Schema" in output
