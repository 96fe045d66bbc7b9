// One call with an official Node SDK, configured only by the environment (as a workload would be):
//   node sdk_call.mjs openai|anthropic|gemini plain|stream MODEL TEXT
// Keys and base URLs come from the SDKs' own variables (OPENAI_API_KEY, ANTHROPIC_API_KEY,
// GEMINI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_BASE_URL, GOOGLE_GEMINI_BASE_URL); the proxy from
// HTTPS_PROXY through douane's preload. Prints {"text": ..., "id": x-douane-request-id or null}.
// An SDK error prints {"error": ..., "status": ...} and exits 3.
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';
import OpenAI from 'openai';

const [provider, mode, model, text] = process.argv.slice(2);
const stream = mode === 'stream';

async function openai() {
  const client = new OpenAI({ maxRetries: 0 });
  const messages = [{ role: 'user', content: text }];
  if (!stream) {
    const { data, response } = await client.chat.completions.create({ model, messages }).withResponse();
    return { text: data.choices[0].message.content, id: response.headers.get('x-douane-request-id') };
  }
  const { data, response } = await client.chat.completions.create({ model, messages, stream: true }).withResponse();
  let out = '';
  for await (const chunk of data) out += chunk.choices[0]?.delta?.content ?? '';
  return { text: out, id: response.headers.get('x-douane-request-id') };
}

async function anthropic() {
  const client = new Anthropic({ maxRetries: 0 });
  const params = { model, max_tokens: 64, messages: [{ role: 'user', content: text }] };
  if (!stream) {
    const { data, response } = await client.messages.create(params).withResponse();
    return { text: data.content.map((b) => b.text ?? '').join(''), id: response.headers.get('x-douane-request-id') };
  }
  const { data, response } = await client.messages.create({ ...params, stream: true }).withResponse();
  let out = '';
  for await (const event of data) {
    if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') out += event.delta.text;
  }
  return { text: out, id: response.headers.get('x-douane-request-id') };
}

async function gemini() {
  const client = new GoogleGenAI({ httpOptions: { retryOptions: { attempts: 1 } } });
  const idOf = (r) => r.sdkHttpResponse?.headers?.['x-douane-request-id'] ?? null;
  if (!stream) {
    const r = await client.models.generateContent({ model, contents: text });
    return { text: r.text, id: idOf(r) };
  }
  let out = '';
  let id = null;
  for await (const r of await client.models.generateContentStream({ model, contents: text })) {
    out += r.text ?? '';
    id = id ?? idOf(r);
  }
  return { text: out, id };
}

const calls = { openai, anthropic, gemini };
try {
  console.log(JSON.stringify(await calls[provider]()));
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.message ?? error), status: error?.status ?? null }));
  process.exit(3);
}
