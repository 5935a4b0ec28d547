"""LLM serving end to end (issue 11): the demo LLM (build/model_store/llm.mar, handler `llm`)
streamed over /predictions and the OpenAI-compatible routes, with curl -N and the official
OpenAI client, and the LLM metrics exact under concurrent load, client disconnects, a full
queue and timeouts.

Variants of llm.mar are made here (model-config.yaml edited, archive re-zipped): `llmlong`
(max_model_len 1024, so one generation runs long enough to watch it stream), `llmload` (the
shipped settings under its own name, so its counters start at zero), `llmtimeout`
(responseTimeout 1) and `llmq` (max_num_seqs 1, with job_queue_size 2).

Greedy decoding (temperature 0) is deterministic and ignore_eos makes every generation run
to max_tokens, so the number of tokens each request gets is known in advance.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import time
import zipfile

import pytest
import requests

import e2e_util
from e2e_util import REPO_ROOT, Tally, parse_exposition, store_with, wait_for, wait_healthy

JS_DIR = REPO_ROOT / "tests" / "js"
TEXT_TYPE = "text/plain; charset=utf-8"
LONG = "llmlong"  # max_model_len 1024: a 1000-token generation takes a while
LONG_TOKENS = 1000


# ---------------------------------------------------------------------------------------
# Variant archives of llm.mar


def llm_variant(store: pathlib.Path, name: str, *, top: dict | None = None,
                llm: dict | None = None) -> pathlib.Path:
    """store/<name>.mar: llm.mar renamed `name`, its model-config.yaml's top-level keys
    (`top`, e.g. responseTimeout) and `llm:` section keys (`llm`) set to the given values."""
    text_lines = None
    out = store / f"{name}.mar"
    with zipfile.ZipFile(e2e_util.demo_archive("llm.mar")) as zin, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "model-config.yaml":
                text_lines = data.decode().splitlines()
                for key, value in (top or {}).items():
                    text_lines = _set_yaml_key(text_lines, key, value, indent="")
                for key, value in (llm or {}).items():
                    text_lines = _set_yaml_key(text_lines, key, value, indent="  ")
                data = ("\n".join(text_lines) + "\n").encode()
            elif info.filename == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["model"]["modelName"] = name
                data = json.dumps(manifest, indent=2).encode()
            zout.writestr(info, data)
    assert text_lines is not None, "llm.mar has no model-config.yaml"
    return out


def _set_yaml_key(lines: list[str], key: str, value, indent: str) -> list[str]:
    pattern = re.compile(rf"^{indent}{re.escape(key)}:")
    out = [f"{indent}{key}: {value}" if pattern.match(line) else line for line in lines]
    if out != lines:
        return out
    if indent:  # a new key of the llm: section, right after its header
        at = lines.index("llm:") + 1
        return lines[:at] + [f"{indent}{key}: {value}"] + lines[at:]
    return [f"{key}: {value}"] + lines


# ---------------------------------------------------------------------------------------
# Raw HTTP: a streamed response read chunk by chunk


def send_post(port: int, path: str, payload, timeout: float = 30.0) -> socket.socket:
    """Opens a connection and sends POST path with `payload` (dict: JSON, str: text/plain)."""
    if isinstance(payload, dict):
        body, ctype = json.dumps(payload).encode(), "application/json"
    else:
        body, ctype = payload.encode(), "text/plain"
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


class ChunkedReader:
    """Reads one HTTP/1.1 response from `sock`: the head, then the chunks one at a time.
    `recvs` counts the recv() calls that returned data after the head (how many separate
    deliveries the body came in); `raw_body` is every byte after the head."""

    def __init__(self, sock: socket.socket, timeout: float = 30.0):
        self.sock = sock
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        self.raw_body = b""
        self.recvs = 0
        self.closed = False
        while b"\r\n\r\n" not in self.buf:
            assert self._more(), f"closed before the head: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.raw_body = self.buf
        self.recvs = 1 if self.buf else 0
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        self.status = int(m.group(1))
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            assert k.lower() not in self.headers, f"repeated header {k}"
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.ended = False

    def _more(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"response not complete; have {self.buf[:300]!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        self.raw_body += data
        self.recvs += 1
        return True

    def next_chunk(self) -> bytes | None:
        """The next chunk's data; None after the last (zero-size) chunk."""
        assert self.chunked, f"not chunked: {self.headers}"
        if self.ended:
            return None
        while b"\r\n" not in self.buf:
            assert self._more(), f"closed inside the chunked body: {self.buf[:200]!r}"
        size_line, _, rest = self.buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            assert self._more(), "closed inside a chunk"
            size_line, _, rest = self.buf.partition(b"\r\n")
        data, trailer, self.buf = rest[:size], rest[size:size + 2], rest[size + 2:]
        assert trailer == b"\r\n", f"chunk not followed by CRLF: {trailer!r}"
        if size == 0:
            self.ended = True
            return None
        return data

    def chunks(self) -> list[bytes]:
        out = []
        while (c := self.next_chunk()) is not None:
            out.append(c)
        return out

    def body(self) -> bytes:
        """The whole body of a non-chunked response (Content-Length)."""
        n = int(self.headers["content-length"])
        while len(self.buf) < n:
            assert self._more(), "closed inside the body"
        body, self.buf = self.buf[:n], self.buf[n:]
        return body


def stream_predictions(port: int, model: str, payload) -> tuple[ChunkedReader, list[bytes]]:
    with send_post(port, f"/predictions/{model}", payload) as sock:
        reader = ChunkedReader(sock)
        assert reader.status == 200, reader.raw_body[:300]
        return reader, reader.chunks()


# ---------------------------------------------------------------------------------------
# Server-sent events


def sse_events(text: str) -> list:
    """The events of an OpenAI stream: each `data: {json}` parsed; the stream must end with
    `data: [DONE]` (not returned) and have nothing else."""
    assert text.endswith("data: [DONE]\n\n"), f"stream does not end with [DONE]: {text[-300:]!r}"
    events = []
    for event in text.split("\n\n")[:-1]:
        assert event.startswith("data: ") and "\n" not in event, f"not an SSE data line: {event!r}"
        payload = event[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1], events[-3:]
    return events[:-1]


def completion_stream_parts(events: list) -> dict:
    """Text, finish_reason, usage and the number of text events of a completions stream."""
    text, finish, usage, text_events, ids = "", None, None, 0, set()
    for i, ev in enumerate(events):
        assert "error" not in ev, ev
        assert ev["object"] == "text_completion", ev
        ids.add(ev["id"])
        if ev["choices"] == []:
            assert i == len(events) - 1, "the usage event is the last"
            usage = ev["usage"]
            continue
        assert finish is None, f"an event after the finish: {ev}"
        assert ev.get("usage") is None, ev
        choice = ev["choices"][0]
        assert choice["index"] == 0 and choice["logprobs"] is None, ev
        if choice["text"]:
            text_events += 1
        text += choice["text"]
        finish = choice["finish_reason"]
    assert len(ids) == 1, f"one id per stream: {ids}"
    return {"text": text, "finish_reason": finish, "usage": usage, "text_events": text_events}


# ---------------------------------------------------------------------------------------
# Metrics


def scrape(server, tally: Tally | None = None) -> str:
    """/metrics; the scrape's own response is recorded in `tally` (Requests2XX counts it)."""
    r = server.metrics()
    assert r.status_code == 200, r.text
    if tally is not None:
        tally.record(r.status_code, "GET /metrics")
    return r.text


def metric(text: str, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for fam in parse_exposition(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


LLM_COUNTERS = [
    ("ts_generation_tokens_total", {}), ("ts_prompt_tokens_total", {}),
    ("ts_time_to_first_token_seconds_count", {}), ("ts_inter_token_latency_seconds_count", {}),
    ("ts_e2e_request_latency_seconds_count", {}), ("ts_request_queue_time_seconds_count", {}),
    ("ts_request_success_total", {"finished_reason": "length"}),
    ("ts_request_success_total", {"finished_reason": "stop"}),
    ("ts_request_success_total", {"finished_reason": "abort"}),
    ("ts_inference_requests_total", {}),
    ("ts_inference_failures_total", {"reason": "client_disconnected"}),
    ("ts_inference_failures_total", {"reason": "timeout"}),
    ("ts_inference_failures_total", {"reason": "queue_full"}),
    ("ts_inference_failures_total", {"reason": "bad_input"}),
    ("ts_inference_failures_total", {"reason": "handler_error"}),
]


def llm_counters(server, model: str, tally: Tally | None = None) -> dict:
    text = scrape(server, tally)
    out = {}
    for name, labels in LLM_COUNTERS:
        key = name + "".join(f"[{v}]" for v in labels.values())
        out[key] = metric(text, name, model_name=model, **labels)
    return out


def counter_delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def wait_idle(server, model: str, tally: Tally | None = None) -> str:
    """Until the model runs and holds nothing: running 0, waiting 0, KV usage 0."""
    def idle():
        text = scrape(server, tally)
        values = [metric(text, g, model_name=model) for g in
                  ("ts_num_requests_running", "ts_num_requests_waiting",
                   "ts_kv_cache_usage_perc")]
        return text if values == [0.0, 0.0, 0.0] else None
    return wait_for(idle, 10, f"{model}: running, waiting and KV usage back to 0")


# ---------------------------------------------------------------------------------------
# The server: the shipped llm.mar, noop (not generative) and the variants


@pytest.fixture(scope="module")
def llm_server(module_tserve, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("llm")
    store = store_with(workdir, "llm.mar", "noop.mar")
    llm_variant(store, LONG, llm={"max_model_len": 1024})
    llm_variant(store, "llmload")
    llm_variant(store, "llmtimeout", top={"responseTimeout": 1},
                llm={"max_model_len": 1024, "max_num_seqs": 8})
    server = module_tserve(config={
        "model_store": str(store),
        "load_models": f"llm.mar,noop.mar,{LONG}.mar,llmload.mar,llmtimeout.mar"}, name="llm")
    wait_healthy(server)
    return server


def inference_key(server) -> str:
    """The inference key tserve wrote (loopback default: not required, but a key that is
    presented, as every OpenAI client does, must be the right one)."""
    keys = json.loads((server.workdir / "key_file.json").read_text())
    return keys["inference"]["key"]


def completion(server, payload: dict, path: str = "/v1/completions") -> dict:
    r = requests.post(server.inference_url + path, json=payload, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.json()


# ---------------------------------------------------------------------------------------
# 1. Streaming on /predictions


def test_predictions_streams_one_chunk_per_token_before_the_generation_ends(llm_server):
    port = llm_server.ports["inference"]
    request = {"prompt": "Once upon a time", "max_tokens": LONG_TOKENS, "ignore_eos": True,
               "temperature": 0}
    before = llm_counters(llm_server, LONG)
    with send_post(port, f"/predictions/{LONG}", request) as sock:
        reader = ChunkedReader(sock)
        assert reader.status_line == "HTTP/1.1 200 OK"
        assert reader.headers["content-type"] == TEXT_TYPE
        assert reader.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in reader.headers
        first = reader.next_chunk()
        assert first, "a first chunk with text"
        # The client holds its first token while the generation is still running: the
        # server has not generated every token nor ended the request (no e2e observation).
        mid = scrape(llm_server)
        generated = metric(mid, "ts_generation_tokens_total", model_name=LONG) - \
            before["ts_generation_tokens_total"]
        assert 1 <= generated < LONG_TOKENS, \
            f"the first chunk arrived after all {generated:.0f} tokens were generated"
        assert metric(mid, "ts_e2e_request_latency_seconds_count", model_name=LONG) == \
            before["ts_e2e_request_latency_seconds_count"], "the request had ended"
        chunks = [first] + reader.chunks()
    assert reader.recvs >= 2, "the body came in one delivery: not streamed"
    for c in chunks:  # one token's text each (a character; held-back bytes join the next)
        assert 1 <= len(c) <= 8 and len(c.decode("utf-8")) <= 2, c
    streamed = b"".join(chunks).decode("utf-8")

    # Greedy is deterministic: the same request streams the same text.
    _, again = stream_predictions(port, LONG, request)
    assert b"".join(again).decode() == streamed

    # The same generation through the OpenAI route: the same text, all max_tokens tokens,
    # and as many text events as /predictions sent chunks (one part per token).
    whole = completion(llm_server, {"model": LONG, **request})
    assert whole["choices"][0]["text"] == streamed
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == LONG_TOKENS
    assert whole["usage"]["prompt_tokens"] == len(request["prompt"]) + 1  # BOS + bytes
    r = requests.post(f"{llm_server.inference_url}/v1/completions",
                      json={"model": LONG, **request, "stream": True}, timeout=60)
    parts = completion_stream_parts(sse_events(r.text))
    assert parts["text"] == streamed
    assert parts["text_events"] == len(chunks)
    assert len(chunks) <= LONG_TOKENS

    after = llm_counters(llm_server, LONG)
    assert counter_delta(before, after) == {
        "ts_generation_tokens_total": 4 * LONG_TOKENS,
        "ts_prompt_tokens_total": 4 * (len(request["prompt"]) + 1),
        "ts_time_to_first_token_seconds_count": 4,
        "ts_inter_token_latency_seconds_count": 4 * (LONG_TOKENS - 1),
        "ts_e2e_request_latency_seconds_count": 4,
        "ts_request_queue_time_seconds_count": 4,
        "ts_request_success_total[length]": 4,
        "ts_inference_requests_total": 4,
    }


def test_predictions_plain_text_body_is_the_prompt(llm_server):
    """A body that is not JSON is the prompt itself (the engine's defaults)."""
    reader, chunks = stream_predictions(llm_server.ports["inference"], "llm", "Hello")
    assert reader.headers["content-type"] == TEXT_TYPE
    assert 1 <= len(chunks) <= 64  # default max_tokens 64 (EOS may end it sooner)


# ---------------------------------------------------------------------------------------
# 2. curl -N


def curl_stream(url: str, payload: dict, tmp_path: pathlib.Path) -> tuple[str, dict]:
    curl = e2e_util.require_tool("curl")
    head_file = tmp_path / "head.txt"
    out = subprocess.run([curl, "-sS", "-N", "--max-time", "60", "-D", str(head_file),
                          "-H", "Content-Type: application/json", "-d", json.dumps(payload),
                          url], capture_output=True, timeout=90)
    assert out.returncode == 0, out.stderr.decode()
    head = head_file.read_bytes().decode("latin-1").split("\r\n")
    assert head[0] == "HTTP/1.1 200 OK", head
    headers = {}
    for line in head[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return out.stdout.decode("utf-8"), headers


def test_curl_streams_predictions_and_chat(llm_server, tmp_path):
    base = llm_server.inference_url
    request = {"prompt": "Hello", "max_tokens": 48, "ignore_eos": True, "temperature": 0}
    text, headers = curl_stream(f"{base}/predictions/llm", request, tmp_path)
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == TEXT_TYPE
    assert text == completion(llm_server, {"model": "llm", **request})["choices"][0]["text"]

    chat = {"model": "llm", "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hello!"}],
            "max_completion_tokens": 24, "temperature": 0, "ignore_eos": True}
    text, headers = curl_stream(f"{base}/v1/chat/completions",
                                {**chat, "stream": True,
                                 "stream_options": {"include_usage": True}}, tmp_path)
    assert headers["content-type"].startswith("text/event-stream"), headers
    assert headers["cache-control"] == "no-cache"
    assert headers["transfer-encoding"] == "chunked"
    events = sse_events(text)
    assert len(events) >= 3
    ids = {e["id"] for e in events}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    content_events = events[:-2]
    finish, usage = events[-2], events[-1]
    assert content_events[0]["choices"][0]["delta"]["role"] == "assistant"
    content = ""
    for e in content_events:
        assert e["object"] == "chat.completion.chunk" and e["usage"] is None, e
        assert e["choices"][0]["finish_reason"] is None, e
        content += e["choices"][0]["delta"]["content"]
    assert finish["choices"][0]["finish_reason"] == "length"
    assert finish["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 24
    template = "<|system|>\nBe brief.\n<|user|>\nHello!\n<|assistant|>\n"
    assert usage["usage"]["prompt_tokens"] == len(template) + 1
    whole = completion(llm_server, chat, "/v1/chat/completions")
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": content}
    assert whole["usage"] == usage["usage"]


# ---------------------------------------------------------------------------------------
# 3. OpenAI shapes


def test_openai_completion_shapes_and_usage(llm_server):
    prompt = "The quick brown fox"
    r = requests.post(f"{llm_server.inference_url}/v1/completions", timeout=60,
                      json={"model": "llm", "prompt": prompt, "max_tokens": 10,
                            "ignore_eos": True, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "cmpl-" + r.headers["x-request-id"]
    assert body["object"] == "text_completion" and body["model"] == "llm"
    assert isinstance(body["created"], int) and body["created"] > 1_600_000_000
    assert len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": len(prompt) + 1, "completion_tokens": 10,
                             "total_tokens": len(prompt) + 11}

    # Streamed with include_usage: the same text, usage in its own last event.
    r = requests.post(f"{llm_server.inference_url}/v1/completions", timeout=60,
                      json={"model": "llm", "prompt": prompt, "max_tokens": 10,
                            "ignore_eos": True, "temperature": 0, "stream": True,
                            "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    parts = completion_stream_parts(sse_events(r.text))
    assert parts["text"] == choice["text"]
    assert parts["finish_reason"] == "length"
    assert parts["usage"] == body["usage"]

    # Without include_usage, no usage event; finish_reason on the last event.
    r = requests.post(f"{llm_server.inference_url}/v1/completions", timeout=60,
                      json={"model": "llm", "prompt": prompt, "max_tokens": 10,
                            "ignore_eos": True, "temperature": 0, "stream": True})
    parts = completion_stream_parts(sse_events(r.text))
    assert parts["usage"] is None and parts["finish_reason"] == "length"
    assert parts["text"] == choice["text"]

    # A stop string (two characters of that text): finish_reason "stop", the text ends
    # before its first occurrence, the token completing it counted.
    full = choice["text"]
    assert len(full) >= 5, full
    stop = full[3:5]
    s = completion(llm_server, {"model": "llm", "prompt": prompt, "max_tokens": 10,
                                "ignore_eos": True, "temperature": 0, "stop": [stop]})
    assert s["choices"][0]["finish_reason"] == "stop"
    assert s["choices"][0]["text"] == full[:full.index(stop)]
    assert len(full[:full.index(stop)]) + 2 <= s["usage"]["completion_tokens"] <= 10


def test_openai_chat_shape_and_usage(llm_server):
    messages = [{"role": "user", "content": "Hi"}]
    r = requests.post(f"{llm_server.inference_url}/v1/chat/completions", timeout=60,
                      json={"model": "llm", "messages": messages, "max_tokens": 7,
                            "ignore_eos": True, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "chatcmpl-" + r.headers["x-request-id"]
    assert body["object"] == "chat.completion" and body["model"] == "llm"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    prompt_tokens = len("<|user|>\nHi\n<|assistant|>\n") + 1
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 7,
                             "total_tokens": prompt_tokens + 7}


def test_seeded_sampling_utf8_prompts_and_a_non_generative_model(llm_server):
    sampled = {"model": "llm", "prompt": "Seeded", "max_tokens": 12, "ignore_eos": True,
               "temperature": 1.0, "top_p": 0.9, "seed": 7}
    a = completion(llm_server, sampled)["choices"][0]["text"]
    b = completion(llm_server, sampled)["choices"][0]["text"]
    assert a == b, "the same seed gives the same text"
    # A prompt's tokens are its UTF-8 bytes plus BOS.
    prompt = "h\u00e9llo \u4e16\u754c"
    u = completion(llm_server, {"model": "llm", "prompt": prompt, "max_tokens": 2,
                                "temperature": 0})["usage"]
    assert u["prompt_tokens"] == len(prompt.encode("utf-8")) + 1
    # A batch handler (noop) answers the route too: its answer is the text, finish "stop",
    # no tokens counted.
    r = requests.post(f"{llm_server.inference_url}/v1/completions", timeout=10,
                      json={"model": "noop", "prompt": "ping"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_models_lists_generative_models_only(llm_server):
    r = requests.get(f"{llm_server.inference_url}/v1/models", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert sorted(ids) == sorted(["llm", LONG, "llmload", "llmtimeout"]), ids
    assert "noop" not in ids
    for m in body["data"]:
        assert m["object"] == "model" and m["owned_by"] == "tserve", m
    one = requests.get(f"{llm_server.inference_url}/v1/models/llm", timeout=10)
    assert one.status_code == 200 and one.json()["id"] == "llm"
    under = requests.get(f"{llm_server.inference_url}/predictions/llm/v1/models", timeout=10)
    assert under.status_code == 200
    assert [m["id"] for m in under.json()["data"]] == ["llm"]


def test_openai_routes_under_torchserve_paths(llm_server):
    base = llm_server.inference_url
    request = {"prompt": "Hello", "max_tokens": 6, "ignore_eos": True, "temperature": 0}
    root = completion(llm_server, {"model": "llm", **request})
    under = completion(llm_server, request, "/predictions/llm/v1/completions")
    assert under["choices"][0]["text"] == root["choices"][0]["text"]
    assert under["model"] == "llm" and under["usage"] == root["usage"]
    # The path names the model: a body's model is ignored there.
    ignored = completion(llm_server, {"model": "whatever", **request},
                         "/predictions/llm/v1/completions")
    assert ignored["choices"][0]["text"] == root["choices"][0]["text"]

    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
            "ignore_eos": True, "temperature": 0}
    versioned = completion(llm_server, chat, "/predictions/llm/1.0/v1/chat/completions")
    at_root = completion(llm_server, {"model": "llm", **chat}, "/v1/chat/completions")
    assert versioned["object"] == "chat.completion"
    assert versioned["choices"][0]["message"] == at_root["choices"][0]["message"]
    r = requests.post(f"{base}/predictions/llm/9.9/v1/chat/completions", json=chat,
                      timeout=10)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"


def openai_error(r: requests.Response, status: int, param=None, code=None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def test_openai_errors_in_openai_shape_and_counted(llm_server):
    url = f"{llm_server.inference_url}/v1/completions"
    chat_url = f"{llm_server.inference_url}/v1/chat/completions"
    before = llm_counters(llm_server, "llm")

    err = openai_error(requests.post(url, json={"model": "nope", "prompt": "x"}, timeout=10),
                       404, "model", "model_not_found")
    assert err["type"] == "invalid_request_error"
    err = openai_error(requests.post(url, json={"model": "llm", "prompt": "x",
                                                "max_tokens": 0}, timeout=10),
                       400, "max_tokens", "invalid_value")
    assert err["type"] == "invalid_request_error"
    openai_error(requests.post(url, json={"model": "llm", "prompt": "x",
                                          "max_tokens": "many"}, timeout=10),
                 400, "max_tokens", "invalid_type")
    openai_error(requests.post(chat_url, json={"model": "llm", "temperature": 3,
                                               "messages": [{"role": "user", "content": "x"}]},
                               timeout=10), 400, "temperature", "invalid_value")
    openai_error(requests.post(url, json={"model": "llm", "prompt": "x", "n": 2}, timeout=10),
                 400, "n", "unsupported_parameter")
    openai_error(requests.post(url, json={"prompt": "x"}, timeout=10), 400, "model")
    openai_error(requests.post(url, data=b"{not json", timeout=10,
                               headers={"Content-Type": "application/json"}), 400)
    # The handler's own 400: a prompt longer than the model's 256 tokens.
    err = openai_error(requests.post(url, json={"model": "llm", "prompt": "a" * 300},
                                     timeout=10), 400)
    assert "maximum context length is 256 tokens" in err["message"], err
    # Streamed, a refusal before any text is an ordinary HTTP error too.
    err = openai_error(requests.post(url, json={"model": "llm", "prompt": "a" * 300,
                                                "stream": True}, timeout=10), 400)
    assert "maximum context length" in err["message"]
    r = requests.get(url, timeout=10)
    openai_error(r, 405, code="method_not_allowed")

    after = llm_counters(llm_server, "llm")
    # Refusals of a known model are counted for it (the unknown model, the requests naming
    # none and the 405 are not).
    assert counter_delta(before, after) == {"ts_inference_requests_total": 6,
                                            "ts_inference_failures_total[bad_input]": 6}
    llm_server.assert_alive()


def test_a_stop_string_the_route_accepts_the_engine_accepts(llm_server):
    """The OpenAI route and the engine agree on the stop-string limit (256 bytes): the
    engine used to refuse 65..256 bytes with its own 400 (param null) that the route had
    accepted."""
    url = f"{llm_server.inference_url}/v1/completions"
    for size in (64, 65, 256):
        r = requests.post(url, timeout=10, json={"model": "llm", "prompt": "Hi",
                                                  "max_tokens": 2, "stop": "x" * size})
        assert r.status_code == 200, (size, r.text)
    # Beyond it: refused by the route's own check, naming the field.
    r = requests.post(url, timeout=10, json={"model": "llm", "prompt": "Hi", "max_tokens": 2,
                                              "stop": "x" * 257})
    openai_error(r, 400, "stop", "invalid_value")


def test_predictions_errors_in_torchserve_shape(llm_server):
    url = f"{llm_server.inference_url}/predictions/llm"
    before = llm_counters(llm_server, "llm")
    for payload in ({"prompt": "x", "max_tokens": "a"}, {"prompt": 5},
                    {"max_tokens": 3}, {"prompt": "x", "temperature": -1},
                    {"prompt": "a" * 300}):
        r = requests.post(url, json=payload, timeout=10)
        assert r.status_code == 400, (payload, r.text)
        body = r.json()
        assert set(body) == {"code", "type", "message"}, body
        assert body["code"] == 400 and body["type"] == "BadRequestException", body
    after = llm_counters(llm_server, "llm")
    assert counter_delta(before, after) == {"ts_inference_requests_total": 5,
                                            "ts_inference_failures_total[bad_input]": 5}
    # Nothing was admitted: no tokens, no slot held.
    wait_idle(llm_server, "llm")


# ---------------------------------------------------------------------------------------
# 4. The official OpenAI client (npm `openai`)


def test_openai_routes_take_a_placeholder_api_key_where_no_key_is_required(llm_server, tserve,
                                                                          tmp_path):
    """OpenAI clients always send an API key ("EMPTY", "sk-no-key" ...). Where no key is
    required (loopback, the default), the OpenAI routes ignore it, as vLLM does without
    --api-key; /predictions keeps TorchServe's rule (a key that is sent must be valid). With
    token authorization on, the OpenAI routes need the inference key like any other."""
    placeholder = {"Authorization": "Bearer EMPTY"}
    body = {"model": "llm", "prompt": "Hi", "max_tokens": 2, "temperature": 0}
    r = requests.post(f"{llm_server.inference_url}/v1/completions", json=body,
                      headers=placeholder, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(f"{llm_server.inference_url}/predictions/llm/v1/chat/completions",
                      headers=placeholder, timeout=30,
                      json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text
    r = requests.get(f"{llm_server.inference_url}/v1/models", headers=placeholder, timeout=10)
    assert r.status_code == 200 and r.json()["data"], r.text
    r = requests.post(f"{llm_server.inference_url}/predictions/llm", json=body,
                      headers=placeholder, timeout=30)
    assert r.status_code == 400 and r.json()["type"] == "InvalidKeyException", r.text

    store = store_with(tmp_path, "llm.mar")
    secured = tserve(config={"model_store": str(store), "load_models": "llm.mar",
                             "enable_token_authorization": "true"}, name="secured")
    wait_healthy(secured)
    url = f"{secured.inference_url}/v1/completions"
    assert requests.post(url, json=body, headers=placeholder, timeout=30).status_code == 400
    assert requests.post(url, json=body, timeout=30).status_code == 400
    key = {"Authorization": f"Bearer {inference_key(secured)}"}
    r = requests.post(url, json=body, headers=key, timeout=30)
    assert r.status_code == 200, r.text


def test_official_openai_client(llm_server):
    node = shutil.which("node") or ("/usr/bin/node" if os.path.exists("/usr/bin/node") else None)
    if node is None:
        pytest.skip("node is not installed: the official OpenAI client (npm openai) needs "
                    "Node >= 18 (scripts/install-deps.sh installs nodejs)")
    assert (JS_DIR / "node_modules" / "openai" / "package.json").is_file(), \
        "tests/js/node_modules/openai missing: run `make js-deps`"
    env = dict(os.environ, TSERVE_INFERENCE_URL=llm_server.inference_url,
               TSERVE_LLM_MODEL="llm", TSERVE_LLM_TIMEOUT_MODEL="llmtimeout",
               TSERVE_API_KEY=inference_key(llm_server))
    out = subprocess.run([node, "--test", str(JS_DIR / "openai_client_test.mjs")],
                         cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    report = out.stdout[-6000:] + out.stderr[-3000:]
    assert out.returncode == 0, report
    assert re.search(r"^# fail 0$", out.stdout, re.M), report
    assert re.search(r"^# pass 6$", out.stdout, re.M), report  # none skipped


# ---------------------------------------------------------------------------------------
# 5. Exact metrics under concurrent load


def test_llm_metrics_are_exact_under_concurrent_streams(llm_server):
    model, n = "llmload", 16
    base = llm_server.inference_url
    tally = e2e_util.tally_from_now(llm_server)
    start = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def client(i: int) -> None:
        try:
            max_tokens = 5 + (35 * i) // (n - 1)  # 5 .. 40
            prompt = f"request {i}: " + "x" * i
            start.wait(timeout=30)
            with requests.post(f"{base}/v1/completions", stream=True, timeout=60,
                               json={"model": model, "prompt": prompt,
                                     "max_tokens": max_tokens, "temperature": 0,
                                     "ignore_eos": True, "stream": True,
                                     "stream_options": {"include_usage": True}}) as r:
                assert r.status_code == 200, r.text
                text = b"".join(r.iter_content(chunk_size=None)).decode()
            results[i] = (max_tokens, len(prompt) + 1, completion_stream_parts(sse_events(text)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    for _ in range(n):
        tally.record(200, "stream")

    tokens = []
    prompt_tokens = []
    for max_tokens, prompt_len, parts in results:
        assert parts["finish_reason"] == "length"
        usage = parts["usage"]
        assert usage["completion_tokens"] == max_tokens
        assert usage["prompt_tokens"] == prompt_len
        assert parts["text_events"] <= max_tokens
        tokens.append(usage["completion_tokens"])
        prompt_tokens.append(usage["prompt_tokens"])

    text = wait_idle(llm_server, model, tally)

    def m(name, **labels):
        return metric(text, name, model_name=model, **labels)

    assert m("ts_generation_tokens_total") == sum(tokens)
    assert m("ts_prompt_tokens_total") == sum(prompt_tokens)
    assert m("ts_time_to_first_token_seconds_count") == n
    assert m("ts_inter_token_latency_seconds_count") == sum(t - 1 for t in tokens)
    assert m("ts_e2e_request_latency_seconds_count") == n
    assert m("ts_request_queue_time_seconds_count") == n
    assert m("ts_request_prompt_tokens_count") == n
    assert m("ts_request_prompt_tokens_sum") == sum(prompt_tokens)
    assert m("ts_request_generation_tokens_count") == n
    assert m("ts_request_generation_tokens_sum") == sum(tokens)
    assert m("ts_request_success_total", finished_reason="length") == n
    assert m("ts_request_success_total", finished_reason="stop") == 0
    assert m("ts_request_success_total", finished_reason="abort") == 0
    assert m("ts_inference_requests_total") == n
    assert m("ts_request_duration_seconds_count") == n
    assert m("ts_inference_failures_total") == 0
    # Continuous batching: decode steps ran several sequences at once.
    steps = m("ts_batch_size_count")
    single = m("ts_batch_size_bucket", le="1.0")
    assert steps > 0 and steps - single > 0, \
        f"every one of {steps:.0f} decode steps ran one sequence: nothing ran concurrently"
    assert m("ts_batch_size_sum") > steps
    tally.assert_exact()


# ---------------------------------------------------------------------------------------
# 6. A client that leaves mid-stream


@pytest.mark.parametrize("route", ["predictions", "chat"])
def test_client_disconnect_aborts_the_sequence_and_frees_its_slot(llm_server, route):
    port = llm_server.ports["inference"]
    before = llm_counters(llm_server, LONG)
    settings = {"max_tokens": 900, "ignore_eos": True, "temperature": 0}
    if route == "predictions":
        sock = send_post(port, f"/predictions/{LONG}", {"prompt": "Goodbye", **settings})
        prompt_tokens = len("Goodbye") + 1
    else:
        sock = send_post(port, "/v1/chat/completions",
                         {"model": LONG, "messages": [{"role": "user", "content": "Goodbye"}],
                          "stream": True, **settings})
        prompt_tokens = len("<|user|>\nGoodbye\n<|assistant|>\n") + 1
    reader = ChunkedReader(sock)
    assert reader.status == 200
    assert reader.next_chunk()
    sock.close()

    def aborted():
        now = llm_counters(llm_server, LONG)
        return now if now["ts_request_success_total[abort]"] > \
            before["ts_request_success_total[abort]"] else None
    after = wait_for(aborted, 10, "the sequence of the client that left to be aborted")
    text = wait_idle(llm_server, LONG)
    delta = counter_delta(before, after)
    generated = delta.pop("ts_generation_tokens_total")
    assert 1 <= generated < 900, "the generation stopped early"
    assert delta.pop("ts_inter_token_latency_seconds_count", 0) == generated - 1
    assert delta == {
        "ts_prompt_tokens_total": prompt_tokens,
        "ts_time_to_first_token_seconds_count": 1,
        "ts_e2e_request_latency_seconds_count": 1,
        "ts_request_queue_time_seconds_count": 1,
        "ts_request_success_total[abort]": 1,
        "ts_inference_requests_total": 1,
        "ts_inference_failures_total[client_disconnected]": 1,
    }
    assert metric(text, "ts_num_requests_running", model_name=LONG) == 0
    # The server keeps serving, the same model too.
    llm_server.assert_alive()
    again = completion(llm_server, {"model": LONG, "prompt": "Hi", "max_tokens": 3,
                                    "ignore_eos": True, "temperature": 0})
    assert again["usage"]["completion_tokens"] == 3


# ---------------------------------------------------------------------------------------
# 7. Waiting beyond capacity: 503 as the queue does


def test_beyond_the_queue_503_counted_exactly(tserve, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    llm_variant(store, "llmq", llm={"max_num_seqs": 1, "max_model_len": 1024})
    server = tserve(config={"model_store": str(store), "load_models": "llmq.mar",
                            "job_queue_size": 2})
    wait_healthy(server)
    tally = e2e_util.tally_from_now(server)
    n = 8
    start = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def client(i: int) -> None:
        try:
            body = {"prompt": f"Queue {i}", "max_tokens": LONG_TOKENS, "ignore_eos": True,
                    "temperature": 0}
            if i % 2:
                url, body = f"{server.inference_url}/v1/completions", {"model": "llmq", **body}
            else:
                url = f"{server.inference_url}/predictions/llmq"
            start.wait(timeout=30)
            r = requests.post(url, json=body, timeout=60)
            results[i] = (i % 2 == 1, r.status_code, r.text)
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    rejected = 0
    for openai_route, status, text in results:
        tally.record(status)
        assert status in (200, 503), text
        if status == 200:
            if openai_route:
                assert json.loads(text)["usage"]["completion_tokens"] == LONG_TOKENS
            continue
        rejected += 1
        body = json.loads(text)
        if openai_route:
            assert body["error"]["type"] == "server_error", body
            assert body["error"]["code"] == "service_unavailable", body
        else:
            assert body["code"] == 503 and body["type"] == "ServiceUnavailableException", body
    assert rejected >= 1, "8 long requests for 1 slot and a queue of 2: none was refused"
    assert n - rejected >= 2  # at least the running one and the queue's first
    text = wait_idle(server, "llmq", tally)

    def m(name, **labels):
        return metric(text, name, model_name="llmq", **labels)

    assert m("ts_inference_failures_total", reason="queue_full") == rejected
    assert m("ts_inference_failures_total") == rejected
    assert m("ts_inference_requests_total") == n
    assert m("ts_request_success_total", finished_reason="length") == n - rejected
    assert m("ts_generation_tokens_total") == (n - rejected) * LONG_TOKENS
    assert m("ts_time_to_first_token_seconds_count") == n - rejected
    tally.assert_exact()
    server.assert_alive()

    # A client that leaves while its request waits in the queue: dropped before the
    # handler sees it (client_disconnected), never admitted (no first token, no abort).
    before = llm_counters(server, "llmq")
    port = server.ports["inference"]
    runner = send_post(port, "/predictions/llmq", {"prompt": "Runner", "max_tokens": LONG_TOKENS,
                                                   "ignore_eos": True, "temperature": 0})
    reader = ChunkedReader(runner)
    assert reader.next_chunk()
    waiting = send_post(port, "/predictions/llmq", {"prompt": "Leaver", "max_tokens": 5})
    wait_for(lambda: metric(scrape(server), "ts_queue_depth", model_name="llmq") == 1, 10,
             "the second request queued")
    waiting.close()
    reader.chunks()
    runner.close()
    after = wait_for(lambda: (c := llm_counters(server, "llmq"))[
        "ts_inference_failures_total[client_disconnected]"] > before[
        "ts_inference_failures_total[client_disconnected]"] and c, 10,
        "the queued request of the client that left to be dropped")
    wait_idle(server, "llmq")
    delta = counter_delta(before, after)
    assert delta == {
        "ts_generation_tokens_total": LONG_TOKENS,
        "ts_prompt_tokens_total": len("Runner") + 1,
        "ts_time_to_first_token_seconds_count": 1,
        "ts_inter_token_latency_seconds_count": LONG_TOKENS - 1,
        "ts_e2e_request_latency_seconds_count": 1,
        "ts_request_queue_time_seconds_count": 1,
        "ts_request_success_total[length]": 1,
        "ts_inference_requests_total": 2,
        "ts_inference_failures_total[client_disconnected]": 1,
    }


# ---------------------------------------------------------------------------------------
# 8. Timeouts (responseTimeout 1)


def read_openai_stream(sock: socket.socket) -> tuple[ChunkedReader, list]:
    reader = ChunkedReader(sock)
    assert reader.status == 200, reader.raw_body[:300]
    text = b"".join(reader.chunks()).decode()
    return reader, sse_events(text)


def test_timeout_ends_a_stream_cleanly_or_answers_408_before_any_token(llm_server):
    """llmtimeout (responseTimeout 1, 8 slots): 8 long generations stream, then their
    deadline passes (8 x 1000 tokens take several seconds): each stream ends cleanly (the
    chunked terminator, no second status line) and counts as a timeout. Requests sent behind
    them, with prompts whose prefill is slow, wait past their own deadline: 408 before any
    token (some may get in and stream first; every outcome is counted exactly)."""
    model = "llmtimeout"
    port = llm_server.ports["inference"]
    tally = e2e_util.tally_from_now(llm_server)
    before = llm_counters(llm_server, model, tally)
    long_request = {"prompt": "Once", "max_tokens": LONG_TOKENS, "ignore_eos": True,
                    "temperature": 0}
    runners = []
    for i in range(8):
        if i % 2:
            runners.append(("openai", send_post(port, "/v1/completions",
                                                {"model": model, "stream": True,
                                                 **long_request})))
        else:
            runners.append(("predictions", send_post(port, f"/predictions/{model}",
                                                     long_request)))
    readers = []
    for kind, sock in runners:
        reader = ChunkedReader(sock)
        assert reader.status == 200, reader.raw_body[:300]
        assert reader.next_chunk(), "a first chunk"
        readers.append((kind, reader))

    # Waiters: queued behind the runners, each with a long prompt (slow prefill).
    waiters = 16
    results: list = [None] * waiters
    errors: list = []

    def waiter(i: int) -> None:
        try:
            r = requests.post(f"{llm_server.inference_url}/v1/completions", timeout=60,
                              json={"model": model, "prompt": f"{i:02d}" + "w" * 990,
                                    "max_tokens": 20, "ignore_eos": True, "temperature": 0,
                                    "stream": True})
            results[i] = (r.status_code, r.text)
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"waiter {i}: {exc!r}")

    threads = [threading.Thread(target=waiter, args=(i,)) for i in range(waiters)]
    for t in threads:
        t.start()

    timeouts = 0
    for kind, reader in readers:
        chunks = reader.chunks()  # ends with the zero-size chunk: a clean end
        tally.record(200)
        assert b"HTTP/1." not in reader.raw_body, "a second status line inside the stream"
        if kind == "predictions":
            assert len(chunks) + 1 < LONG_TOKENS, "the generation ran to its end"
            # The connection is still in step: the next request on it is answered.
            reader.sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            ping = ChunkedReader(reader.sock)
            assert ping.status == 200 and json.loads(ping.body()) == {"status": "Healthy"}
            tally.record(ping.status)
        else:
            events = sse_events(b"".join(chunks).decode())
            assert "error" in events[-1], events[-1]
            err = events[-1]["error"]
            assert err["code"] == "timeout", err
            assert all("error" not in e and e["choices"][0]["finish_reason"] is None
                       for e in events[:-1]), "no finish before the error"
        timeouts += 1
        reader.sock.close()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors

    before_token, mid_stream, finished = 0, 0, 0
    for status, text in results:
        tally.record(status)
        if status == 408:
            err = openai_error_body(text)
            assert err["code"] == "timeout", err
            before_token += 1
            continue
        assert status == 200, text
        events = sse_events(text)
        if "error" in events[-1]:
            assert events[-1]["error"]["code"] == "timeout"
            mid_stream += 1
        else:
            assert completion_stream_parts(events)["finish_reason"] == "length"
            finished += 1
    assert before_token >= 1, (f"no request timed out before its first token "
                               f"({mid_stream} timed out mid-stream, {finished} finished)")
    timeouts += before_token + mid_stream

    wait_idle(llm_server, model, tally)
    after = llm_counters(llm_server, model, tally)
    delta = counter_delta(before, after)
    assert delta["ts_inference_failures_total[timeout]"] == timeouts
    assert delta["ts_inference_requests_total"] == 8 + waiters
    assert delta.get("ts_request_success_total[length]", 0) == finished
    # Every sequence that got a first token ended: as a timeout (abort) or at its length.
    assert delta["ts_time_to_first_token_seconds_count"] == 8 + mid_stream + finished
    assert delta["ts_request_success_total[abort]"] >= 8 + mid_stream
    assert "ts_inference_failures_total[handler_error]" not in delta
    tally.assert_exact()
    llm_server.assert_alive()


def openai_error_body(text: str) -> dict:
    body = json.loads(text)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]
