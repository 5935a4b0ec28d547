"""Exact accounting under faults (issue 7, section 4).

A bounded mixed load over 64 connections — successes, unknown models (404), bad tensors,
handler errors (500), queue overflow (503), oversized bodies (413), clients that leave mid-request and while
queued — with noop scaled up and down and a register/unregister cycle running, and /metrics
scraped every 100 ms. Every scrape must show counters that never go down and histograms whose
_count equals their +Inf bucket; afterwards every counter reconciles with what clients saw.
Only requests whose client left on purpose after sending them may or may not have been
answered; they are the only slack allowed, and only in the direction they can go.
"""

from __future__ import annotations

import collections
import os

import e2e_util
from e2e_util import metric_value, request_counters, wait_for, wait_healthy
from mixed_load import MAIN_MODELS, MixedLoad, model_accounting, prepare_store, server_config

MAX_REQUEST_SIZE = 65536
REQUESTS = int(os.environ.get("TSERVE_FAULT_REQUESTS", "10000"))


def _quiet(server) -> tuple[str, int]:
    """Waits until no job is queued anywhere and the counters stopped moving; returns the
    last scrape's text and how many scrapes (all answered 200) it took."""
    last = {"text": None, "n": 0}

    def settled():
        r = server.metrics()
        assert r.status_code == 200
        last["n"] += 1
        text = r.text
        depth = sum(s.value for f in e2e_util.parse_exposition(text) if f.name == "ts_queue_depth"
                    for s in f.samples)
        stable = last["text"] is not None and _counts_only(last["text"]) == _counts_only(text)
        last["text"] = text
        return depth == 0 and stable
    wait_for(settled, 30, "the server to settle after the load", interval=0.5)
    return last["text"], last["n"]


def _counts_only(text: str) -> dict:
    out = {}
    for fam in e2e_util.parse_exposition(text):
        if fam.name.startswith(("ts_inference", "Requests")) or fam.name.endswith("duration_seconds"):
            for s in fam.samples:
                if not s.name.endswith("_sum"):
                    out[(s.name, s.label_text)] = s.value
    # Requests2XX moves with our own scrapes; leave it out of the stability check.
    return {k: v for k, v in out.items() if not k[0].startswith("Requests")}


def test_counters_reconcile_exactly_under_mixed_faults(tserve, tmp_path):
    store = prepare_store(tmp_path / "w")
    server = tserve(config=server_config(store, MAX_REQUEST_SIZE))
    wait_healthy(server)
    base = server.metrics()
    assert base.status_code == 200
    base_classes = request_counters(base.text)
    base_models = {m: model_accounting(base.text, m) for m in MAIN_MODELS}

    load = MixedLoad(server, connections=64, max_request_size=MAX_REQUEST_SIZE)
    load.run(requests_total=REQUESTS, scrape_period=0.1)
    assert load.scrapes >= 5, "the scraper barely ran"
    assert load.churn_cycles >= 1 and load.scale_changes >= 2, (load.churn_cycles,
                                                                  load.scale_changes)
    assert not load.errors, "\n".join(load.errors[:40])
    server.assert_alive()

    # Let the workers finish, then compare. Each scrape's response is counted once it is
    # sent, after its own body was rendered: the last one is not in its own text.
    final, settle_scrapes = _quiet(server)

    outcomes = load.rec.snapshot()
    by_kind = collections.Counter(o.kind for o in outcomes)
    for kind in ("noop", "linear", "bad_tensor", "handler_error", "slow", "unknown", "oversized",
                 "disconnect_mid", "disconnect_queued"):
        assert by_kind[kind] > 0, f"the load never sent a {kind} request: {by_kind}"
    statuses = collections.Counter((o.kind, o.status) for o in outcomes)
    assert statuses[("oversized", 413)] == by_kind["oversized"], statuses
    assert statuses[("unknown", 404)] == by_kind["unknown"], statuses
    assert statuses[("handler_error", 500)] == by_kind["handler_error"], statuses
    assert statuses[("slow", 503)] > 0, ("the slow model's queue never overflowed", statuses)

    # Per model: requests = successes + failures by reason, and both match the clients.
    for model in MAIN_MODELS:
        now = model_accounting(final, model)
        was = base_models[model]
        d_req = now["requests"] - was["requests"]
        d_ok = now["successes"] - was["successes"]
        d_fail = sum(now["failures"].values()) - sum(was["failures"].values())
        assert now["requests"] == now["successes"] + sum(now["failures"].values()), (model, now)
        mine = [o for o in outcomes if o.model == model]
        known = [o for o in mine if not o.ambiguous]
        amb = len(mine) - len(known)
        ok = sum(1 for o in known if o.status == 200)
        failed = sum(1 for o in known if o.status is not None and o.status != 200)
        assert len(known) <= d_req <= len(mine), (model, d_req, len(known), len(mine))
        assert ok <= d_ok <= ok + amb, (model, d_ok, ok, amb)
        assert failed <= d_fail <= failed + amb, (model, d_fail, failed, amb, now["failures"])

    # Responses by class: exact for every client that waited for its answer; requests whose
    # client left may add at most one response each, never take one away.
    seen, ambiguous = load.client_classes()
    server_now = request_counters(final)
    diff = {}
    for cls in ("Requests2XX", "Requests4XX", "Requests5XX"):
        expected = base_classes[cls] + seen[cls]
        if cls == "Requests2XX":
            # the baseline scrape, assert_alive's /ping, the settle scrapes but the last
            expected += 1 + 1 + settle_scrapes - 1
        diff[cls] = server_now[cls] - expected
    for cls, d in diff.items():
        assert 0 <= d <= ambiguous, (cls, diff, ambiguous, seen, base_classes, server_now)
    assert sum(diff.values()) <= ambiguous, (diff, ambiguous)

    # The server still serves and its counters still add up exactly for a plain request.
    tally = e2e_util.tally_from_now(server)
    r = tally.request("POST", f"{server.inference_url}/predictions/noop", data=b"after")
    assert r.status_code == 200 and r.content == b"after"
    tally.assert_exact()
    assert metric_value(server.metrics().text, "ts_queue_depth", model_name="noop") == 0
