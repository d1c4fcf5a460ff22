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
