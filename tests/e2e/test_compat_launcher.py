"""Drop-in for TorchServe's launch scripts (issue 8 #3, #4, #9), written from TorchServe's
documentation: `torchserve --help` of 0.12 (ts/arg_parser.py), its configuration docs
(docs/configuration.md: TS_CONFIG_FILE, the `models=` key) and its token authorization
docs (docs/token_authorization_api.md: key_file.json, `Authorization: Bearer <key>`)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import zipfile

import requests

from e2e_util import (BINARY, DEMO_STORE, base_env, default_config, format_properties,
                      free_ports, port_accepts, run_expect_exit, wait_for)

TOKEN_FAILED = {"code": 400, "type": "InvalidKeyException",
                "message": "Token Authorization failed. Token either incorrect, expired, or "
                           "not provided correctly"}


def store_with_noop(tmp_path):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    shutil.copy(DEMO_STORE / "noop.mar", store / "noop.mar")
    return store


def write_noop_version(store, file_name: str, version: str) -> None:
    """Another version of the noop model, as torch-model-archiver would write it."""
    manifest = {"runtime": "python", "archiverVersion": "0.12.0",
                "model": {"modelName": "noop", "handler": "noop", "modelVersion": version}}
    with zipfile.ZipFile(store / file_name, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------------------------------
# #3: every flag of `torchserve --help` (0.12)


def test_torchserve_command_line_accepted_as_is(tserve, tmp_path):
    """A TorchServe launch line with every flag of `torchserve --help`: nothing exits,
    the flags with a meaning take effect, the others each get a one-line notice."""
    store = store_with_noop(tmp_path)
    workflows = tmp_path / "wf"
    workflows.mkdir()
    server = tserve(config={"model_store": None}, args=[
        "--model-store", str(store), "--workflow-store", str(workflows),
        "--models", "noop=noop.mar", "--log-config", str(tmp_path / "log4j2.xml"),
        "--cpp-log-config", str(tmp_path / "cpp.yaml"), "--ncs", "--no-config-snapshots",
        "--plugins-path", str(tmp_path / "plugins"), "--disable-token-auth",
        "--enable-model-api"])
    # --models and --model-store: the model is loaded from that store
    r = requests.get(f"{server.management_url}/models/noop", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()[0]["modelUrl"] == "noop.mar"
    # --enable-model-api: unregister (405 without it) works
    r = requests.delete(f"{server.management_url}/models/noop", timeout=10)
    assert r.status_code == 200, r.text
    # --disable-token-auth: no key file, and a key sent is not checked
    assert not (server.workdir / "key_file.json").exists()
    assert requests.get(f"{server.management_url}/models", headers=bearer("whatever"),
                        timeout=5).status_code == 200
    err = server.stderr()
    for flag in ("--workflow-store", "--log-config", "--cpp-log-config", "--ncs",
                 "--plugins-path"):
        notices = [line for line in err.splitlines()
                   if flag in line and "accepted for TorchServe compatibility" in line]
        assert len(notices) == 1, f"{flag}: {notices}\n{err}"


def test_short_aliases_and_version(tmp_path):
    rc, out, err = run_expect_exit(tmp_path / "v", args=["-v"])
    assert rc == 0 and "tserve" in out, out + err
    rc, out, err = run_expect_exit(tmp_path / "h", args=["--help"])
    assert rc == 0, err
    for flag in ("--start", "--stop", "--foreground", "--ts-config", "--model-store",
                 "--workflow-store", "--models", "--log-config", "--cpp-log-config",
                 "--ncs", "--no-config-snapshots", "--plugins-path", "--ppath",
                 "--disable-token-auth", "--dt", "--enable-model-api", "--version"):
        assert flag in out, f"{flag} missing from --help"


def test_enable_model_api_flag_alone(tserve, tmp_path):
    """Before: `tserve ... --enable-model-api` exited with "The following argument was not
    expected". Now it sets enable_model_api=true."""
    store = store_with_noop(tmp_path)
    server = tserve(config={"model_store": str(store)}, args=["--enable-model-api", "--dt",
                                                              "--ppath", "plugins"])
    r = requests.post(f"{server.management_url}/models",
                      params={"url": "noop.mar", "initial_workers": "1"}, timeout=30)
    assert r.status_code in (200, 202), r.text
    assert requests.get(f"{server.management_url}/models/noop", timeout=5).status_code == 200


def _start_plain(tmp_path, args, env_extra=None, ports=None):
    env = base_env(tmp_path)
    env.update(env_extra or {})
    err = open(tmp_path / "err.txt", "wb")
    proc = subprocess.Popen([str(BINARY), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    err.close()
    return proc


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_start_is_optional_as_in_torchserve(tmp_path):
    """`torchserve --foreground --ts-config ...` (no --start) starts the server."""
    ports = free_ports(3)
    cfg = default_config(tmp_path, ports)
    path = tmp_path / "config.properties"
    path.write_text(format_properties(cfg))
    proc = _start_plain(tmp_path, ["--foreground", "--ts-config", str(path)])
    try:
        wait_for(lambda: port_accepts(ports[0]) or proc.poll() is not None, 15,
                 "the inference listener")
        assert proc.poll() is None, (tmp_path / "err.txt").read_text()
        assert requests.get(f"http://127.0.0.1:{ports[0]}/ping", timeout=5).status_code == 200
    finally:
        _stop(proc)
    rc, out, err = run_expect_exit(tmp_path / "both", args=["--start", "--stop"])
    assert rc == 2 and "--stop" in err, err


def test_ts_config_file_env_wins_over_ts_config(tmp_path):
    """TorchServe's docs: --ts-config is read only when TS_CONFIG_FILE is not set."""
    ports = free_ports(3)
    via_env = tmp_path / "via-env.properties"
    via_env.write_text(format_properties(default_config(tmp_path, ports)))
    other_ports = free_ports(3)
    via_flag = tmp_path / "via-flag.properties"
    via_flag.write_text(format_properties(default_config(tmp_path, other_ports)))
    proc = _start_plain(tmp_path, ["--start", "--foreground", "--ts-config", str(via_flag)],
                        env_extra={"TS_CONFIG_FILE": str(via_env)})
    try:
        wait_for(lambda: port_accepts(ports[0]) or proc.poll() is not None, 15,
                 "the inference listener of TS_CONFIG_FILE's config")
        assert proc.poll() is None, (tmp_path / "err.txt").read_text()
        assert not port_accepts(other_ports[0])
    finally:
        _stop(proc)


def test_ts_env_overrides_keep_working_with_flags(tserve, tmp_path):
    """TS_<KEY> (enable_envvars_config=true) still wins over the command line."""
    store = store_with_noop(tmp_path)
    server = tserve(config={"model_store": str(store), "enable_envvars_config": "true"},
                    env={"TS_ENABLE_MODEL_API": "false"}, args=["--enable-model-api"])
    r = requests.post(f"{server.management_url}/models", params={"url": "noop.mar"}, timeout=10)
    assert r.status_code == 405, r.text


# ---------------------------------------------------------------------------------------
# #4: models= in config.properties

MODELS_JSON = """{\\
  "noop": {\\
    "1.0": {\\
        "defaultVersion": true,\\
        "marName": "noop.mar",\\
        "minWorkers": 2,\\
        "maxWorkers": 3,\\
        "batchSize": 4,\\
        "maxBatchDelay": 150,\\
        "responseTimeout": 77,\\
        "startupTimeout": 120\\
    }\\
  }\\
}"""


def config_text_with(store, ports, extra: str) -> str:
    return (f"inference_address=http://127.0.0.1:{ports[0]}\n"
            f"management_address=http://127.0.0.1:{ports[1]}\n"
            f"metrics_address=http://127.0.0.1:{ports[2]}\n"
            f"model_store={store}\n{extra}\n")


def test_models_key_configures_startup_models(tserve, tmp_path):
    """TorchServe's documented example: models= sets the workers, batching and timeout of
    the version load_models loads; model-config.yaml inside the archive ranks above it
    (noop.mar's says batchSize: 1)."""
    store = store_with_noop(tmp_path)
    p = free_ports(3)
    server = tserve(config_text=config_text_with(store, p,
                                                 "load_models=noop.mar\nmodels=" + MODELS_JSON),
                    ports={"inference": p[0], "management": p[1], "metrics": p[2]})
    d = requests.get(f"{server.management_url}/models/noop", timeout=5).json()[0]
    assert (d["minWorkers"], d["maxWorkers"]) == (2, 3), d
    assert d["maxBatchDelay"] == 150 and d["responseTimeout"] == 77, d
    assert d["batchSize"] == 1, d  # the archive's model-config.yaml wins, as in TorchServe
    assert len(d["workers"]) == 2, d


def test_models_key_default_version(tserve, tmp_path):
    """defaultVersion picks the default among the versions loaded at startup."""
    store = store_with_noop(tmp_path)
    write_noop_version(store, "noop_v2.mar", "2.0")
    p = free_ports(3)
    models = '{"noop": {"1.0": {"minWorkers": 1}, "2.0": {"defaultVersion": true}}}'
    server = tserve(config_text=config_text_with(
        store, p, f"load_models=noop.mar,noop_v2.mar\nmodels={models}"),
        ports={"inference": p[0], "management": p[1], "metrics": p[2]})
    d = requests.get(f"{server.management_url}/models/noop", timeout=5).json()
    assert d[0]["modelVersion"] == "2.0", d


def test_models_key_bad_value_names_model_and_field(tmp_path):
    ports = free_ports(3)
    cfg = default_config(tmp_path, ports)
    cfg["models"] = '{"noop": {"1.0": {"minWorkers": -1}}}'
    path = tmp_path / "config.properties"
    path.write_text(format_properties(cfg))
    rc, out, err = run_expect_exit(tmp_path, args=["--start", "--foreground", "--ts-config",
                                                   str(path)])
    assert rc == 2, err
    line = [ln for ln in err.splitlines() if "models" in ln]
    assert line and '"noop"' in line[0] and '"1.0"' in line[0] and "minWorkers" in line[0], err
    assert "config.properties line" in line[0], err


def test_models_key_unloaded_entry_is_a_warning(tserve, tmp_path):
    store = store_with_noop(tmp_path)
    p = free_ports(3)
    server = tserve(config_text=config_text_with(
        store, p, 'load_models=noop.mar\nmodels={"resnet": {"1.0": {"minWorkers": 1}}}'),
        ports={"inference": p[0], "management": p[1], "metrics": p[2]})
    logs = server.logs_text()
    assert "model resnet version 1.0" in logs and "did not load" in logs, logs


# ---------------------------------------------------------------------------------------
# #9: key_file.json where TorchServe users look for it


def test_key_file_written_and_presented_keys_checked_on_loopback(tserve, tmp_path):
    """Loopback defaults: no key is needed, but key_file.json is written (mode 0600) and a
    request that presents a key must present the valid one (TorchServe's 400)."""
    store = store_with_noop(tmp_path)
    server = tserve(config={"model_store": str(store), "load_models": "noop.mar"})
    key_file = server.workdir / "key_file.json"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    keys = json.loads(key_file.read_text())
    assert set(keys) == {"management", "inference", "API"}
    pred = f"{server.inference_url}/predictions/noop"
    mgmt = f"{server.management_url}/models"
    # no key: the documented tserve default still works
    assert requests.post(pred, data="x", timeout=10).status_code == 200
    assert requests.get(mgmt, timeout=5).status_code == 200
    # a wrong key, or the other listener's key: TorchServe's answer
    for url, key in ((pred, "wrong"), (pred, keys["management"]["key"])):
        r = requests.post(url, data="x", headers=bearer(key), timeout=10)
        assert r.status_code == 400 and r.json() == TOKEN_FAILED, r.text
    r = requests.get(mgmt, headers=bearer(keys["inference"]["key"]), timeout=5)
    assert r.status_code == 400 and r.json() == TOKEN_FAILED, r.text
    # the right keys: as a TorchServe script sends them
    ok = requests.post(pred, data="x", headers=bearer(keys["inference"]["key"]), timeout=10)
    assert ok.status_code == 200 and ok.text == "x"
    assert requests.get(mgmt, headers=bearer(keys["management"]["key"]),
                        timeout=5).status_code == 200
    # rotation works as in TorchServe
    r = requests.get(f"{server.management_url}/token", params={"type": "inference"},
                     headers=bearer(keys["API"]["key"]), timeout=5)
    assert r.status_code == 200, r.text
    new_keys = json.loads(key_file.read_text())
    assert requests.post(pred, data="x", headers=bearer(keys["inference"]["key"]),
                         timeout=10).status_code == 400
    assert requests.post(pred, data="x", headers=bearer(new_keys["inference"]["key"]),
                         timeout=10).status_code == 200
    server.assert_alive()


def test_disabled_token_auth_writes_no_key_file(tserve, tmp_path):
    server = tserve(config={"disable_token_authorization": "true"})
    assert not (server.workdir / "key_file.json").exists()
    assert requests.get(f"{server.management_url}/models", headers=bearer("anything"),
                        timeout=5).status_code == 200
