"""GET /docs in a real browser: headless Chromium driven by selenium clicks, waits for the answer
and keeps a screenshot of each page in ``test-artefacts/`` at the root of the checkout (ignored by
git; CI may collect it).

Chromium and its driver come from Debian (``apt-get install chromium chromium-driver``; ``.ci/run``
installs them). Without them the tests skip saying so, except under ``CI=true``, where they fail.
"""

import json
import os
import shutil
import signal

import pytest

from support.servers import kill, module_server, start

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1100,1300")
WAIT = 30   # seconds a page may take to answer on a busy machine (a bound, not a measure)
ARTEFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "test-artefacts")

PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5Erk"
           "Jggg==")

MAIN = """
    import base64

    import openbayes_serving as serv


    class Predictor:
        \"\"\"Doubles numbers.\"\"\"

        input_schema = {"type": "object", "properties": {"values": {"type": "array"}}}
        input_example = {"values": [1, 2, 3]}

        def predict(self, json):
            if json.get("as") == "png":
                return base64.b64decode("%s")
            if json.get("as") == "text":
                return "plain words"
            return {"doubled": [v * 2 for v in json["values"]]}


    if __name__ == "__main__":
        serv.run(Predictor)
""" % PNG_1X1

UPLOADS = """
    import openbayes_serving as serv


    class Predictor:
        def predict(self, request):
            upload = request.files["file"]
            return {"name": upload.filename, "size": len(upload.read())}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def unavailable(reason):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (pip install '.[test]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        unavailable("chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # its own session, so that the driver and every browser process it starts end together
    service = Service(executable_path=driver_path, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            process = getattr(service, "process", None)
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


main = module_server("docs-main", MAIN)


def page(server):
    return f"http://127.0.0.1:{server.port}/docs"


def element(driver, ident):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, ident)


def wait_until(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT).until(lambda d: condition())


def open_page(driver, server):
    driver.get(page(server))
    wait_until(driver, lambda: element(driver, "predict").is_displayed()
               or element(driver, "key-box").is_displayed())


def send(driver, button="send", status="status"):
    driver.execute_script(f"document.getElementById('{status}').dataset.state = 'idle'")
    element(driver, button).click()
    wait_until(driver, lambda: element(driver, status).get_attribute("data-state") == "done")
    return element(driver, status).text


def set_text(driver, ident, text):
    field = element(driver, ident)
    field.clear()
    field.send_keys(text)


def screenshot(driver, name):
    os.makedirs(ARTEFACTS, exist_ok=True)
    path = os.path.join(ARTEFACTS, f"{name}.png")
    assert driver.save_screenshot(path) and os.path.getsize(path) > 0
    print(f"screenshot: {path}")
    return path


def test_the_example_is_sent_and_the_answer_shown_as_json(browser, main):
    open_page(browser, main)
    assert json.loads(element(browser, "editor").get_attribute("value")) == {"values": [1, 2, 3]}
    assert "Doubles numbers." in element(browser, "reads").text
    status = send(browser)
    assert status.startswith("200") and "application/json" in status
    assert element(browser, "answer").text == json.dumps({"doubled": [2, 4, 6]}, indent=2)
    screenshot(browser, "docs-json-answer")
    set_text(browser, "editor", '{"values": [21]}')
    send(browser)
    assert json.loads(element(browser, "answer").text) == {"doubled": [42]}


def test_an_image_answer_is_shown_as_an_image_and_text_as_text(browser, main):
    open_page(browser, main)
    set_text(browser, "editor", '{"as": "png"}')
    assert "image/png" in send(browser)
    image = element(browser, "answer-image")
    assert image.is_displayed()
    wait_until(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", image) == 1)
    screenshot(browser, "docs-image-answer")
    set_text(browser, "editor", '{"as": "text"}')
    assert "text/plain" in send(browser)
    assert element(browser, "answer").text == "plain words"
    assert not image.is_displayed()


def test_json_that_does_not_parse_is_not_sent(browser, main):
    open_page(browser, main)
    set_text(browser, "editor", '{"values": [1,')
    element(browser, "send").click()
    assert "not valid JSON" in element(browser, "status").text


def test_a_file_is_uploaded_to_a_predictor_that_reads_request_files(browser, tmp_path):
    server = start(tmp_path / "uploads", UPLOADS)
    try:
        open_page(browser, server)
        assert element(browser, "file-box").is_displayed()
        upload = tmp_path / "photo.bin"
        upload.write_bytes(b"x" * 1234)
        element(browser, "file").send_keys(str(upload))
        assert send(browser).startswith("200")
        assert json.loads(element(browser, "answer").text) == {"name": "photo.bin", "size": 1234}
        screenshot(browser, "docs-upload")
    finally:
        kill(server)


def test_the_page_asks_for_the_api_key_and_sends_it(browser, tmp_path):
    server = start(tmp_path / "keys", MAIN, "--api-key", "page-key-1")
    try:
        open_page(browser, server)
        assert element(browser, "key-box").is_displayed()
        assert not element(browser, "predict").is_displayed()
        set_text(browser, "key", "page-key-1")
        element(browser, "key-use").click()
        wait_until(browser, lambda: element(browser, "predict").is_displayed())
        assert send(browser).startswith("200")
        assert json.loads(element(browser, "answer").text) == {"doubled": [2, 4, 6]}
        screenshot(browser, "docs-api-key")
    finally:
        browser.execute_script("sessionStorage.clear()")
        kill(server)


def test_an_onnx_model_gets_one_field_per_input(browser, tmp_path):
    pytest.importorskip("onnxruntime")
    from support.iris import serve_bare_model
    server = serve_bare_model(tmp_path / "iris")
    try:
        open_page(browser, server)
        wait_until(browser, lambda: element(browser, "v2").is_displayed())
        field = element(browser, "v2-input-features")
        assert json.loads(field.get_attribute("value")) == [[0, 0, 0, 0]]
        set_text(browser, "v2-input-features", "[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]")
        assert send(browser, "v2-send", "v2-status").startswith("200")
        answer = json.loads(element(browser, "v2-answer").text)
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["label"]["data"] == [0, 2] and outputs["label"]["shape"] == [2]
        # POST / of the zero-code model is prefilled with its inputs too
        assert json.loads(element(browser, "editor").get_attribute("value")) == {
            "inputs": {"features": [[0, 0, 0, 0]]}}
        screenshot(browser, "docs-v2-model")
    finally:
        server.stop()
