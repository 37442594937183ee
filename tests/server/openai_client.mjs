// Drives `orchard serve` with OpenAI's official Node client (run by
// tests/cli/test_openai_client.sh, which installs the `openai` package):
// a chat completion, the same request streamed (greedy: the same text,
// finish reason and usage), the model list, and the errors the client turns
// into typed exceptions: tools (not supported yet) as a 400 APIError naming
// the field, a wrong key as 401, an unknown model as 404.
// usage: node openai_client.mjs BASE_URL MODEL API_KEY
import OpenAI from "openai";

const [baseURL, model, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
let failures = 0;
function check(ok, what) {
  if (!ok) {
    console.error(`FAIL: ${what}`);
    failures++;
  }
}
const messages = [
  { role: "system", content: "be brief" },
  { role: "user", content: "the whale rose from the sea" },
];
const base = { model, messages, max_tokens: 8, temperature: 0, seed: 1 };

const r = await client.chat.completions.create(base);
check(r.object === "chat.completion", `object is ${r.object}`);
check(r.model === model, `model is ${r.model}`);
check(r.choices.length === 1 && r.choices[0].message.role === "assistant", "one assistant choice");
const content = r.choices[0].message.content;
check(typeof content === "string", "content is a string");
check(["stop", "length"].includes(r.choices[0].finish_reason), `finish_reason ${r.choices[0].finish_reason}`);
check(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 8,
      `usage ${JSON.stringify(r.usage)}`);
check(r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens adds up");

const stream = await client.chat.completions.create({ ...base, stream: true, stream_options: { include_usage: true } });
let text = "", finish = null, usage = null, role = null, chunks = 0;
for await (const c of stream) {
  chunks++;
  check(c.object === "chat.completion.chunk", `chunk object ${c.object}`);
  if (c.usage) usage = c.usage;
  for (const ch of c.choices) {
    if (ch.delta.role) role = ch.delta.role;
    if (ch.delta.content) text += ch.delta.content;
    if (ch.finish_reason) finish = ch.finish_reason;
  }
}
check(chunks >= 3, `only ${chunks} chunks`);
check(role === "assistant", "the stream names the assistant role");
check(text === content, `streamed text ${JSON.stringify(text)} differs from ${JSON.stringify(content)}`);
check(finish === r.choices[0].finish_reason, `streamed finish_reason ${finish}`);
check(usage && usage.completion_tokens === r.usage.completion_tokens, `streamed usage ${JSON.stringify(usage)}`);

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, `models ${JSON.stringify(models.data)}`);

async function expectError(promise, status, cls, param, code, what) {
  try {
    await promise;
    check(false, `${what}: no error`);
  } catch (e) {
    check(e instanceof OpenAI.APIError, `${what}: ${e} is not an APIError`);
    check(e instanceof cls, `${what}: ${e.constructor.name} is not ${cls.name}`);
    check(e.status === status, `${what}: status ${e.status}`);
    if (param !== undefined) check(e.param === param, `${what}: param ${e.param}`);
    if (code !== undefined) check(e.code === code, `${what}: code ${e.code}`);
    check(typeof e.error?.message === "string" && e.error.message.length > 0, `${what}: no message`);
  }
}
const tools = [{ type: "function", function: { name: "get_weather", description: "weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
await expectError(client.chat.completions.create({ ...base, tools }), 400, OpenAI.BadRequestError, "tools",
                  "unsupported_parameter", "tools");
await expectError(client.chat.completions.create({ ...base, temperature: 3 }), 400, OpenAI.BadRequestError,
                  "temperature", undefined, "temperature 3");
await expectError(client.chat.completions.create({ ...base, model: "no-such-model" }), 404, OpenAI.NotFoundError,
                  undefined, "model_not_found", "unknown model");
const wrong = new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 });
await expectError(wrong.chat.completions.create(base), 401, OpenAI.AuthenticationError, undefined, "invalid_api_key",
                  "wrong key");

if (failures) process.exit(1);
console.log(`ok: ${JSON.stringify(content)} (${r.usage.completion_tokens} tokens), streamed in ${chunks} chunks`);
