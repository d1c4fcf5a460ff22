"""What an operator sees: the command line, paths, the start-up log, the access log, request ids,
structured logs, CORS and the messages that tell a client what to do."""

import json
import os
import re
import stat
import sys

import pytest

from conftest import ECHO, launch, write_predictor
from helpers_server import kill, ready, run_to_exit, start, wait_for_new
from http_client import Connection, post, post_json, request

KEY = "k-operator-0123"


def lite_serving_command(tmp_path):
    """An executable named ``lite-serving`` (as the installed console script is named)."""
    script = tmp_path / "bin" / "lite-serving"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom lite_serving.__main__ import main\n"
                      "sys.exit(main())\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def run_command(args, cwd):
    """Run a command to its end with the tests' lite_serving; (status, output)."""
    import subprocess
    from helpers_server import clean_env
    proc = subprocess.run(args, cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


# -- 9. the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("flags,meant", [(["--prot", "18013"], "--protect-metrics"),
                                         (["--worker", "2"], "--workers")])
def test_abbreviated_flags_are_refused_naming_the_flag_meant(tmp_path, flags, meant):
    directory = write_predictor(tmp_path / "m", ECHO)
    code, output = run_to_exit(["-m", "lite_serving", str(directory), *flags], tmp_path)
    assert code == 2, output
    first = output.splitlines()[0]
    assert first.startswith("python -m lite_serving: error: unrecognized arguments"), output
    assert f"did you mean {meant}?" in first
    assert "usage:" not in output  # one line and a pointer to --help, not the 13-line usage


def test_errors_name_the_command_as_typed(tmp_path):
    directory = write_predictor(tmp_path / "m", ECHO)
    command = lite_serving_command(tmp_path)
    code, output = run_command([str(command), str(directory), "--workers", "0"], tmp_path)
    assert code == 2, output
    assert output.splitlines()[0] == "lite-serving: error: --threads must be >= 0 and --workers >= 1"
    assert "predictor.py: error" not in output and "python -m" not in output


def test_help_names_the_units(tmp_path):
    code, output = run_to_exit(["-m", "lite_serving", "--help"], tmp_path)
    assert code == 0
    assert re.search(r"--max-batch-size REQUESTS\s", output), output
    assert re.search(r"--max-batch-delay MS\s", output), output


def test_an_unknown_variable_is_named_with_the_closest_setting(tmp_path):
    server = start(tmp_path / "m", ECHO, env={"LITE_SERVING_WOKERS": "2"})
    try:
        server.wait_for(r"WARNING .*LITE_SERVING_WOKERS is not a lite_serving setting and is "
                        r"ignored; did you mean LITE_SERVING_WORKERS\?")
    finally:
        kill(server)


# -- 2. relative paths ---------------------------------------------------------------------------

def test_relative_paths_are_relative_to_where_the_command_runs(tmp_path):
    """``lite-serving DIR --api-key-file keys.txt`` reads keys.txt of the current directory,
    not of DIR (the process moves into DIR)."""
    directory = write_predictor(tmp_path / "m", ECHO)
    (tmp_path / "keys.txt").write_text(KEY + "\n")
    server = launch(directory, "--host", "127.0.0.1", "--port", "0", "--api-key-file", "keys.txt",
                    cwd=tmp_path)
    try:
        ready(server)
        assert post_json(server, {"a": 1}).status == 401
        answer = post_json(server, {"a": 1}, headers={"X-API-Key": KEY})
        assert answer.status == 200 and answer.json() == {"a": 1}
    finally:
        kill(server)


def test_a_missing_relative_file_is_named_by_its_absolute_path(tmp_path):
    directory = write_predictor(tmp_path / "m", ECHO)
    code, output = run_to_exit(["-m", "lite_serving", str(directory), "--port", "0",
                                "--ssl-certfile", "cert.pem"], tmp_path)
    assert code == 1, output
    assert f"cannot read --ssl-certfile {tmp_path / 'cert.pem'}: No such file" in output, output


# -- 8. messages that say what to do ---------------------------------------------------------------

@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("echo"), ECHO, "--max-body-size", "1000")
    yield server
    kill(server)


def test_json_sent_as_a_form_names_the_type_and_the_fix(echo):
    answer = post(echo, b'{"a": 1}', "application/x-www-form-urlencoded")  # curl -d
    assert answer.status == 400
    error = answer.json()["error"]
    assert "sent as application/x-www-form-urlencoded" in error
    assert "Content-Type: application/json" in error


@pytest.mark.parametrize("body,reason", [(b"\xc1", "it holds a byte that begins no MessagePack value"),
                                         (b"\x92\x01", "the body ends in the middle of a value"),
                                         (b"\x01\x02", "bytes follow the end of the first value")])
def test_a_bad_msgpack_body_says_why(echo, body, reason):
    answer = post(echo, body, "application/msgpack")
    assert answer.status == 400
    assert answer.json()["error"] == f"the request body is not valid MessagePack: {reason}"


def test_a_json_body_that_is_not_utf8_is_told_so(echo):
    answer = post(echo, b'{"a": "caf\xe9"}', "application/json")
    assert answer.status == 400
    assert answer.json()["error"] == ("the request body is not valid JSON: it is not UTF-8 text "
                                      "(byte 0xe9 at offset 10); JSON must be sent as UTF-8")


def test_413_names_the_flag(echo):
    answer = post(echo, b"x" * 1001, "application/json")
    assert answer.status == 413
    assert answer.json()["error"] == ("request body of 1001 bytes is over --max-body-size "
                                      "(1000 bytes)")
