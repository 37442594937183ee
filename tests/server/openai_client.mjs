// Drives `orchard serve` with OpenAI's official Node client (run by
// tests/cli/test_openai_client.sh, which installs the `openai` package):
// a chat completion, the same request streamed (greedy: the same text,
// finish reason and usage), the model list, a tool call round trip (the
// call, its arguments against the schema, the tool result sent back, the
// answer; the call streamed), a json_object answer, and the errors the
// client turns into typed exceptions: a 400 naming the field, a wrong key as
// 401, an unknown model as 404.
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
// A tool call round trip: the model must call the tool (tool_choice
// "required"), its arguments parse and fit the schema, the result goes back
// as a tool message after the assistant's tool_calls, and the answer is text.
const tools = [{ type: "function", function: { name: "get_weather", description: "weather in a city",
  parameters: { type: "object", properties: { city: { type: "string", maxLength: 24 },
                                              unit: { type: "string", enum: ["c", "f"] } },
                required: ["city", "unit"], additionalProperties: false } } }];
const ask = [{ role: "user", content: "What is the weather in Oslo?" }];
const tc = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: "required",
                                                  temperature: 1, seed: 7, max_tokens: 80 });
const call = tc.choices[0].message.tool_calls?.[0];
check(tc.choices[0].finish_reason === "tool_calls", `tool call finish_reason ${tc.choices[0].finish_reason}`);
check(call && call.type === "function" && call.function.name === "get_weather", `tool call ${JSON.stringify(call)}`);
let args = null;
try { args = JSON.parse(call.function.arguments); } catch (e) { check(false, `arguments are not JSON: ${call?.function.arguments}`); }
check(args && typeof args.city === "string" && [..."" + args.city].length <= 24 && ["c", "f"].includes(args.unit) &&
      Object.keys(args).every((k) => k === "city" || k === "unit"), `arguments ${JSON.stringify(args)}`);
const answer = await client.chat.completions.create({ model, tools, max_tokens: 8, temperature: 0, tool_choice: "none",
  messages: [...ask, tc.choices[0].message, { role: "tool", tool_call_id: call.id, content: "12 degrees and windy" }] });
check(typeof answer.choices[0].message.content === "string" && !answer.choices[0].message.tool_calls,
      `answer after the tool result ${JSON.stringify(answer.choices[0].message)}`);
check(answer.usage.prompt_tokens > tc.usage.prompt_tokens, "the tool call and result are in the prompt");
// The same call streamed: the client's deltas add up to the whole call.
const tstream = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: "required",
                                                       temperature: 1, seed: 7, max_tokens: 80, stream: true });
let sname = "", sargs = "", sfinish = null;
for await (const c of tstream) {
  for (const ch of c.choices) {
    for (const d of ch.delta.tool_calls ?? []) {
      if (d.function?.name) sname += d.function.name;
      if (d.function?.arguments) sargs += d.function.arguments;
    }
    if (ch.finish_reason) sfinish = ch.finish_reason;
  }
}
check(sname === call.function.name && sargs === call.function.arguments && sfinish === "tool_calls",
      `streamed call ${sname} ${sargs} ${sfinish}`);
// Structured output.
const js = await client.chat.completions.create({ ...base, max_tokens: 40, response_format: { type: "json_object" } });
try { check(typeof JSON.parse(js.choices[0].message.content) === "object", "json_object answer"); }
catch (e) { check(false, `json_object answer is not JSON: ${js.choices[0].message.content}`); }

await expectError(client.chat.completions.create({ ...base, tools, tool_choice: { type: "function", function: { name: "nope" } } }),
                  400, OpenAI.BadRequestError, "tool_choice", null, "unknown tool_choice");
await expectError(client.chat.completions.create({ ...base, functions: [{ name: "f" }] }), 400, OpenAI.BadRequestError,
                  "functions", "unsupported_parameter", "functions");
await expectError(client.chat.completions.create({ ...base, temperature: 3 }), 400, OpenAI.BadRequestError,
                  "temperature", undefined, "temperature 3");
await expectError(client.chat.completions.create({ ...base, model: "no-such-model" }), 404, OpenAI.NotFoundError,
                  undefined, "model_not_found", "unknown model");
const wrong = new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 });
await expectError(wrong.chat.completions.create(base), 401, OpenAI.AuthenticationError, undefined, "invalid_api_key",
                  "wrong key");

if (failures) process.exit(1);
console.log(`ok: ${JSON.stringify(content)} (${r.usage.completion_tokens} tokens), streamed in ${chunks} chunks; ` +
            `tool call ${call.function.name}(${call.function.arguments})`);
