// douane's Node preload, loaded with NODE_OPTIONS="--import <this file>" (`douane env node` prints it).
//
// Node's built-in fetch (what the openai, @anthropic-ai/sdk and @google/genai SDKs use) ignores
// HTTPS_PROXY before Node 22.21 / 24.5, so a workload's calls would leave ungoverned. This file makes
// fetch honour HTTP(S)_PROXY and NO_PROXY by installing undici's EnvHttpProxyAgent as the global
// dispatcher, which Node's fetch reads. The undici it loads is douane's own copy (./undici, vendored
// unmodified by scripts/vendor_undici): the workload installs nothing.
//
// Where Node routes fetch through the proxy itself (NODE_USE_ENV_PROXY=1 on Node >= 22.21 or
// >= 24.5) this file steps aside. If it cannot install the proxy it stops the process: a call that
// would go round douane must not go at all.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** Whether this Node routes fetch through HTTPS_PROXY by itself (and was asked to). */
export function nodeHonoursEnvProxy(version = process.versions.node, env = process.env) {
  const flag = env.NODE_USE_ENV_PROXY;
  if (!flag || flag === '0') return false;
  const [major, minor] = version.split('.').map(Number);
  return major > 24 || (major === 24 && minor >= 5) || (major === 22 && minor >= 21);
}

function proxyConfigured(env = process.env) {
  return Boolean(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy);
}

/**
 * The parts of douane's undici the proxy needs, loaded as its index.js loads them (the dispatchers
 * get their API methods, among them the `connect` the proxy agent's CONNECT uses), without the rest
 * (its own fetch, WebSocket, caches): half the start-up cost of the whole package.
 */
function undici() {
  const Dispatcher = require('./undici/lib/dispatcher/dispatcher.js');
  Object.assign(Dispatcher.prototype, require('./undici/lib/api/index.js'));
  return {
    EnvHttpProxyAgent: require('./undici/lib/dispatcher/env-http-proxy-agent.js'),
    setGlobalDispatcher: require('./undici/lib/global.js').setGlobalDispatcher,
  };
}

/** Run `make` without the "experimental" warning undici's EnvHttpProxyAgent prints in every process. */
function withoutExperimentalWarning(make) {
  const emit = process.emitWarning;
  process.emitWarning = function (warning, options, ...rest) {
    const code = typeof options === 'object' && options !== null ? options.code : rest[0];
    if (code !== 'UNDICI-EHPA') return emit.call(process, warning, options, ...rest);
  };
  try {
    return make();
  } finally {
    process.emitWarning = emit;
  }
}

if (proxyConfigured() && !nodeHonoursEnvProxy()) {
  try {
    const { EnvHttpProxyAgent, setGlobalDispatcher } = undici();
    setGlobalDispatcher(withoutExperimentalWarning(() => new EnvHttpProxyAgent()));
  } catch (error) {
    throw new Error(
      `douane preload: could not route fetch through HTTPS_PROXY (${error.message}); ` +
      'Node >= 18.18 is needed; on Node >= 22.21 or 24.5 set NODE_USE_ENV_PROXY=1 instead of this preload',
      { cause: error });
  }
}
