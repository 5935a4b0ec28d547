// The OpenAI-compatible endpoints through the official OpenAI client (npm `openai`, pinned
// in package.json), against a running tserve that serves a generative model.
//
//   TSERVE_INFERENCE_URL  the inference listener (default http://127.0.0.1:8080)
//   TSERVE_LLM_MODEL      the generative model's name (default "llm")
//   TSERVE_API_KEY        the inference key when token authorization is on (default none)
//   TSERVE_LLM_TIMEOUT_MODEL  optional: a generative model with responseTimeout 1 and
//                         max_model_len >= 1010 (tests/e2e/test_llm.py's llmtimeout), for the
//                         error that ends a stream that has begun
//
//   node --test tests/js/openai_client_test.mjs
//
// Greedy decoding (temperature 0) is deterministic, so a streamed answer must equal the
// non-streamed one for the same request, and the usage must count what was received.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = (process.env.TSERVE_INFERENCE_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const model = process.env.TSERVE_LLM_MODEL ?? "llm";
const client = new OpenAI({
  baseURL: `${base}/v1`,
  apiKey: process.env.TSERVE_API_KEY ?? "unused",
  maxRetries: 0,
  timeout: 60_000,
});
const MAX = 12;

function checkUsage(usage, finishReason) {
  assert.ok(usage, "usage is present");
  assert.ok(usage.prompt_tokens > 0, "the prompt has tokens");
  assert.ok(usage.completion_tokens > 0 && usage.completion_tokens <= MAX);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  if (finishReason === "length") assert.equal(usage.completion_tokens, MAX);
}

test("GET /v1/models lists the model", async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, "model");
    assert.equal(m.owned_by, "tserve");
    ids.push(m.id);
  }
  assert.ok(ids.includes(model), `${model} in ${ids}`);
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
});

test("a completion, non-streamed then streamed, greedy: the same text", async () => {
  const request = { model, prompt: "Once upon a time", max_tokens: MAX, temperature: 0 };
  const whole = await client.completions.create(request);
  assert.equal(whole.object, "text_completion");
  assert.equal(whole.model, model);
  assert.match(whole.id, /^cmpl-/);
  assert.equal(whole.choices.length, 1);
  const choice = whole.choices[0];
  assert.ok(["stop", "length"].includes(choice.finish_reason), choice.finish_reason);
  checkUsage(whole.usage, choice.finish_reason);

  const stream = await client.completions.create({
    ...request,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  let chunks = 0;
  const ids = new Set();
  for await (const chunk of stream) {
    assert.equal(chunk.object, "text_completion");
    ids.add(chunk.id);
    if (chunk.usage) {
      assert.deepEqual(chunk.choices, []);
      usage = chunk.usage;
      continue;
    }
    assert.equal(finish, null, "nothing after the finish but the usage");
    text += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    chunks++;
  }
  assert.ok(chunks >= 2, "text came in several events");
  assert.equal(ids.size, 1, "one id for the whole stream");
  assert.equal(text, choice.text);
  assert.equal(finish, choice.finish_reason);
  assert.deepEqual(usage, whole.usage);
});

test("a chat completion, non-streamed then streamed, greedy: the same message", async () => {
  const request = {
    model,
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hello!" },
    ],
    max_completion_tokens: MAX,
    temperature: 0,
  };
  const whole = await client.chat.completions.create(request);
  assert.equal(whole.object, "chat.completion");
  assert.match(whole.id, /^chatcmpl-/);
  const message = whole.choices[0].message;
  assert.equal(message.role, "assistant");
  assert.equal(typeof message.content, "string");
  checkUsage(whole.usage, whole.choices[0].finish_reason);

  const stream = await client.chat.completions.create({ ...request, stream: true });
  let content = "";
  let role = null;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, "chat.completion.chunk");
    const choice = chunk.choices[0];
    if (choice.delta.role) role = choice.delta.role;
    content += choice.delta.content ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(role, "assistant");
  assert.equal(content, message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
});

test("the stream is text/event-stream ending in [DONE] (as curl -N sees it)", async () => {
  const r = await fetch(`${base}/v1/completions`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      ...(process.env.TSERVE_API_KEY ? { Authorization: `Bearer ${process.env.TSERVE_API_KEY}` } : {}),
    },
    body: JSON.stringify({ model, prompt: "Hi", max_tokens: 3, stream: true }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /^text\/event-stream/);
  assert.equal(r.headers.get("cache-control"), "no-cache");
  const body = await r.text();
  assert.ok(body.endsWith("data: [DONE]\n\n"), body);
  for (const event of body.split("\n\n").filter(Boolean)) assert.match(event, /^data: /);
});

test("errors come back in OpenAI's shape and the client raises them", async () => {
  await assert.rejects(
    client.completions.create({ model: "no-such-model", prompt: "x" }),
    (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
      assert.equal(e.status, 404);
      assert.equal(e.code, "model_not_found");
      assert.equal(e.param, "model");
      assert.equal(e.type, "invalid_request_error");
      return true;
    },
  );
  await assert.rejects(
    client.chat.completions.create({
      model,
      messages: [{ role: "user", content: "x" }],
      temperature: 3,
    }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.equal(e.status, 400);
      assert.equal(e.param, "temperature");
      return true;
    },
  );
  await assert.rejects(client.completions.create({ model, prompt: "x", n: 2 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, "n");
    return true;
  });
});

const timeoutModel = process.env.TSERVE_LLM_TIMEOUT_MODEL;
test(
  "an error after the stream began (the timeout) is raised by the client",
  { skip: timeoutModel ? false : "TSERVE_LLM_TIMEOUT_MODEL not set" },
  async () => {
    // Eight 1000-token generations at once run well past the model's 1 s timeout: each
    // stream has sent text when its deadline passes, so it ends with an error event.
    const one = async (i) => {
      const stream = await client.completions.create({
        model: timeoutModel,
        prompt: `Stream ${i}`,
        max_tokens: 1000,
        temperature: 0,
        ignore_eos: true,
        stream: true,
      });
      let text = "";
      try {
        for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
      } catch (e) {
        return { text, error: e };
      }
      return { text, error: null };
    };
    const results = await Promise.all([...Array(8).keys()].map(one));
    for (const { text, error } of results) {
      assert.ok(error, "the stream ended with an error");
      assert.ok(error instanceof OpenAI.APIError, error.constructor.name);
      assert.equal(error.code, "timeout");
      assert.ok(text.length > 0, "text arrived before the error");
    }
  },
);
