"""End to end: the TorchScript handlers are a backend module, libtserve_torch.so, that tserve
loads the first time a model needs it (docs/handlers.md, "Backends").

  - with no TorchScript model, no LibTorch is mapped into the process; registering one
    loads the module (and LibTorch with it) and the model answers;
  - a tserve without the module beside it (copied alone into a folder) still serves models
    that need no backend; registering a TorchScript model fails at once with a 400 that says
    which module is missing and where it was looked for (and the log says it too), and
    nothing is registered.
"""

from __future__ import annotations

import pathlib
import shutil

import requests

import e2e_util
from e2e_util import store_with, wait_healthy

MODULE = "libtserve_torch.so"


def mapped_libraries(pid: int) -> set[str]:
    """File names of the shared objects mapped into the process."""
    names = set()
    for line in pathlib.Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and ".so" in fields[5]:
            names.add(pathlib.Path(fields[5]).name)
    return names


def torch_mapped(pid: int) -> bool:
    return any(name.startswith(("libtorch", "libc10")) or name == MODULE
               for name in mapped_libraries(pid))


def mgmt(server, method: str, path: str) -> requests.Response:
    return requests.request(method, f"{server.management_url}{path}", timeout=120)


def test_libtorch_is_loaded_by_the_first_torchscript_model(tserve, tmp_path):
    store = store_with(tmp_path / "w", "linear.mar", "noop.mar")
    server = tserve(config={"model_store": str(store), "enable_model_api": True})
    assert not torch_mapped(server.pid), sorted(mapped_libraries(server.pid))

    # A model that needs no backend loads nothing.
    r = mgmt(server, "POST", "/models?url=noop.mar&initial_workers=1&synchronous=true")
    assert r.status_code == 200, r.text
    assert not torch_mapped(server.pid), sorted(mapped_libraries(server.pid))

    r = mgmt(server, "POST", "/models?url=linear.mar&initial_workers=1&synchronous=true")
    assert r.status_code == 200, r.text
    r = requests.post(f"{server.inference_url}/predictions/linear", json=[1, 2, 3, 4], timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 2
    libraries = mapped_libraries(server.pid)
    assert MODULE in libraries and any(n.startswith("libtorch_cpu") for n in libraries), libraries
    logs = server.logs_text()
    assert f"loaded the TorchScript backend from {e2e_util.BINARY.parent / MODULE}" in logs, logs
    assert logs.count("loaded the TorchScript backend") == 1, logs


def test_without_the_module_torchscript_models_fail_and_others_serve(tserve, tmp_path,
                                                                     monkeypatch):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(e2e_util.BINARY, alone / "tserve")
    monkeypatch.setattr(e2e_util, "BINARY", alone / "tserve")
    store = store_with(tmp_path / "w", "linear.mar", "noop.mar")
    server = tserve(config={"model_store": str(store), "enable_model_api": True})

    for _ in range(2):  # the module is looked for again, and the answer is the same
        r = mgmt(server, "POST", "/models?url=linear.mar&initial_workers=1&synchronous=true")
        reason = (f'handler "tensor" needs the TorchScript backend ({MODULE}), which is not '
                  f"installed: looked in {alone}, {tmp_path / 'lib' / 'tserve'}")
        assert r.status_code == 400, r.text
        assert r.json()["type"] == "BadRequestException", r.text
        assert reason in r.json()["message"], r.text
    assert mgmt(server, "GET", "/models/linear").status_code == 404
    logs = server.logs_text()
    assert reason in logs, logs

    r = mgmt(server, "POST", "/models?url=noop.mar&initial_workers=1&synchronous=true")
    assert r.status_code == 200, r.text
    r = requests.post(f"{server.inference_url}/predictions/noop", data=b"still serving",
                      timeout=10)
    assert r.status_code == 200 and r.content == b"still serving", r.text
    wait_healthy(server)
    assert not torch_mapped(server.pid), sorted(mapped_libraries(server.pid))
