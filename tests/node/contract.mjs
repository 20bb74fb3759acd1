// The official OpenAI Node SDK against a gateway: what a client sees must be
// OpenAI's contract whatever the upstream (here a permissive local server
// behind a BYOI node) does. Run by tests/python/test_contract.py with
// SB_BASE (the gateway's /v1 URL), SB_KEY, SB_MODEL (the node's route) and
// SB_PROVIDER_MODEL (a route to a provider) set; exits non-zero on
// the first failed check.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const base = process.env.SB_BASE;
const key = process.env.SB_KEY;
const model = process.env.SB_MODEL;
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0, timeout: 20_000 });
const hi = [{ role: 'user', content: 'count to five' }];

async function rejects(promise, cls, check) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e?.constructor?.name}: ${e}`);
    check?.(e);
    return;
  }
  assert.fail(`expected ${cls.name}, got a success`);
}

// Plain: usage is always there (the gateway's estimate when the server sends none).
const reply = await client.chat.completions.create({ model, messages: hi, mock: { tokens: 3 } });
assert.equal(reply.object, 'chat.completion');
assert.equal(reply.choices[0].message.content, 'word word word ');
assert.ok(reply.usage.completion_tokens > 0 && reply.usage.prompt_tokens > 0, JSON.stringify(reply.usage));
assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);

// Streamed with usage: content chunks, then one usage chunk with no choices.
const stream = await client.chat.completions.create({
  model, messages: hi, stream: true, stream_options: { include_usage: true }, mock: { tokens: 4 },
});
let text = '';
let usage = null;
let finish = null;
for await (const chunk of stream) {
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? '';
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(text, 'word word word word ');
assert.equal(finish, 'stop');
assert.equal(usage.completion_tokens, 4);

// A generation cut short upstream ([DONE] without a finish_reason) raises.
await rejects(
  (async () => {
    const s = await client.chat.completions.create({
      model, messages: hi, stream: true, mock: { tokens: 3, interval_ms: 5, no_finish_reason: true },
    });
    for await (const _ of s) { /* drain */ }
  })(),
  OpenAI.APIError,
  (e) => assert.match(String(e.message), /finish_reason/),
);
// [DONE] then a close is a normal end.
const closed = await client.chat.completions.create({
  model: process.env.SB_PROVIDER_MODEL, messages: hi, stream: true, mock: { tokens: 2, done_then_close: true },
});
let n = 0;
for await (const chunk of closed) n += chunk.choices.length;
assert.ok(n >= 2);

// Errors: typed, with OpenAI's codes.
const bad = new OpenAI({ baseURL: base, apiKey: 'sk-not-a-key', maxRetries: 0 });
await rejects(bad.chat.completions.create({ model, messages: hi }), OpenAI.AuthenticationError);
await rejects(client.chat.completions.create({ model: 'no-such-model', messages: hi }), OpenAI.NotFoundError,
  (e) => assert.equal(e.code, 'model_not_found'));
await rejects(client.post('/chat/completions', { body: { model } }), OpenAI.BadRequestError,
  (e) => { assert.equal(e.param, 'messages'); assert.equal(e.code, 'missing_required_parameter'); });
await rejects(client.chat.completions.create({ model, messages: [] }), OpenAI.BadRequestError,
  (e) => assert.equal(e.code, 'empty_array'));
await rejects(client.chat.completions.create({ model, messages: [{ role: 'robot', content: 'x' }] }),
  OpenAI.BadRequestError, (e) => assert.equal(e.param, 'messages[0].role'));
await rejects(client.chat.completions.create({ model, messages: hi, temperature: 3 }), OpenAI.BadRequestError,
  (e) => assert.equal(e.code, 'decimal_above_max_value'));

// Models: listed and retrievable.
const ids = [];
for await (const m of client.models.list()) ids.push(m.id);
assert.ok(ids.includes(model), ids.join(','));
assert.equal((await client.models.retrieve(model)).id, model);

console.log('node sdk contract: ok');
