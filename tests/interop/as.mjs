// oidc-provider (panva, v9) configured as a SMART Backend Services authorization server for
// smart-guard's interop suite: our configuration, their server.
//
//   node as.mjs --keys DIR [--port 0] [--state FILE] [--short-ttl 3] [--watch-stdin]
//
// DIR holds one sub-directory per key, each written by `smart-guard keygen --alg ALG --out DIR/NAME`
// (only jwks.json is read here; the private keys stay with the Rust side):
//   backend-rs384, backend-es384, rs-jwt-rs384, rs-jwt-es384, rs-bearer
// Once listening on 127.0.0.1 it prints one JSON line to stdout: {"issuer": …, "port": …, "pid": …}.
// Loopback, development only: the secrets below are test fixtures.

import { Buffer } from 'node:buffer';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------- arguments
const args = { port: '0', 'short-ttl': '3' };
for (let i = 2; i < process.argv.length; i += 1) {
  const name = process.argv[i].replace(/^--/, '');
  if (name === 'watch-stdin') {
    args[name] = true;
  } else {
    args[name] = process.argv[i + 1];
    i += 1;
  }
}
if (!args.keys) {
  console.error('usage: node as.mjs --keys DIR [--port 0] [--state FILE] [--short-ttl 3] [--watch-stdin]');
  process.exit(2);
}

// ---------------------------------------------------------------- fixtures shared with the Rust suite
const FHIR_RS = 'https://fhir.interop.test/fhir';
const OTHER_RS = 'https://other.interop.test/fhir';
const RS_SECRET = 'interop rs-s3cret:with&odd=chars';
const INTROSPECTION_SCOPE = 'introspection';
const SMART_SCOPES = [
  'system/Patient.rs', 'system/Observation.rs', 'system/Patient.read', 'system/Observation.read',
  'system/*.rs', 'system/*.read',
];
// Resource servers allowed to introspect. `bearer-gateway` is the internal client the bearer
// shim below introspects as after checking a SMART bearer token.
const INTROSPECTORS = new Set(['rs-basic', 'rs-post', 'rs-jwt-rs384', 'rs-jwt-es384', 'bearer-gateway']);
const GATEWAY_SECRET = crypto.randomBytes(32).toString('base64url');

// ---------------------------------------------------------------- storage (optionally persistent)
// oidc-provider's adapter interface over one Map. With --state, every change is written to a
// file and read back at start, so "the AS restarts and remembers its tokens" can be tested next
// to "the AS restarts and has forgotten everything" (no --state).
const store = new Map();
const stateFile = args.state;
if (stateFile && fs.existsSync(stateFile)) {
  for (const [k, v] of JSON.parse(fs.readFileSync(stateFile, 'utf8'))) store.set(k, v);
}
function persist() {
  if (!stateFile) return;
  const tmp = `${stateFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify([...store]));
  fs.renameSync(tmp, stateFile);
}
const epoch = () => Math.floor(Date.now() / 1000);

class Adapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, expiresAt: expiresIn ? epoch() + expiresIn : null });
    persist();
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt !== null && entry.expiresAt < epoch()) {
      store.delete(this.key(id));
      persist();
      return undefined;
    }
    return entry.payload;
  }

  async findBy(field, value) {
    for (const [k, { payload }] of store) {
      if (k.startsWith(`${this.model}:`) && payload[field] === value) return payload;
    }
    return undefined;
  }

  findByUid(uid) { return this.findBy('uid', uid); }

  findByUserCode(userCode) { return this.findBy('userCode', userCode); }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = epoch();
    persist();
  }

  async destroy(id) {
    store.delete(this.key(id));
    persist();
  }

  async revokeByGrantId(grantId) {
    for (const [k, { payload }] of store) if (payload.grantId === grantId) store.delete(k);
    persist();
  }
}

// ---------------------------------------------------------------- clients
const jwks = (name) => JSON.parse(fs.readFileSync(path.join(args.keys, name, 'jwks.json'), 'utf8'));
// A SMART Backend Services client: client_credentials with a private_key_jwt assertion.
const backend = (clientId, keyName, alg, scope) => ({
  client_id: clientId,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'private_key_jwt',
  token_endpoint_auth_signing_alg: alg,
  jwks: jwks(keyName),
  scope,
});
// A resource server: no grants, it only authenticates to introspect.
const resourceServer = (clientId, auth) => ({
  client_id: clientId,
  grant_types: [],
  response_types: [],
  redirect_uris: [],
  ...auth,
});
const clients = [
  backend('backend-rs384', 'backend-rs384', 'RS384', 'system/Patient.rs system/Observation.rs'),
  backend('backend-es384', 'backend-es384', 'ES384', 'system/Patient.rs system/Observation.rs'),
  backend('backend-short', 'backend-es384', 'ES384', 'system/Patient.rs'),
  backend('backend-other', 'backend-es384', 'ES384', 'system/Patient.rs system/Observation.rs'),
  backend('rs-bearer', 'rs-bearer', 'ES384', INTROSPECTION_SCOPE),
  resourceServer('rs-basic', { client_secret: RS_SECRET, token_endpoint_auth_method: 'client_secret_basic' }),
  resourceServer('rs-post', { client_secret: RS_SECRET, token_endpoint_auth_method: 'client_secret_post' }),
  resourceServer('rs-jwt-rs384', {
    token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'RS384', jwks: jwks('rs-jwt-rs384'),
  }),
  resourceServer('rs-jwt-es384', {
    token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'ES384', jwks: jwks('rs-jwt-es384'),
  }),
  resourceServer('bearer-gateway', { client_secret: GATEWAY_SECRET, token_endpoint_auth_method: 'client_secret_basic' }),
];

// Which resource (audience) each backend client's tokens are for: SMART backend clients send no
// `resource`, so the AS decides. backend-other's tokens are for another FHIR server.
const DEFAULT_RESOURCE = {
  'backend-rs384': FHIR_RS,
  'backend-es384': FHIR_RS,
  'backend-short': FHIR_RS,
  'backend-other': OTHER_RS,
};
const RESOURCE_SERVERS = {
  [FHIR_RS]: { scope: SMART_SCOPES.join(' '), accessTokenFormat: 'opaque', accessTokenTTL: 300 },
  [OTHER_RS]: { scope: SMART_SCOPES.join(' '), accessTokenFormat: 'opaque', accessTokenTTL: 300 },
};
const SHORT_TTL = Number(args['short-ttl']);

// ---------------------------------------------------------------- the server
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(args.port), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  adapter: Adapter,
  clients,
  clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
  // SMART asymmetric client authentication uses RS384 and ES384; oidc-provider's default list
  // (RS256, PS256, ES256, Ed25519, EdDSA, HS256) has neither.
  enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384'] },
  // Static scopes: a client's `scope` is an allow-list for these, and with no resource
  // indicator only these survive a client_credentials request.
  scopes: ['openid', ...SMART_SCOPES, INTROSPECTION_SCOPE],
  cookies: { keys: [crypto.randomBytes(16).toString('hex')] },
  ttl: {
    // Backend Services tokens SHALL be short-lived (<= 300 s); backend-short's live seconds.
    ClientCredentials: (ctx, token, client) => (client?.clientId === 'backend-short'
      ? SHORT_TTL
      : token.resourceServer?.accessTokenTTL ?? 300),
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client) => DEFAULT_RESOURCE[client.clientId],
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, indicator) => {
        const info = RESOURCE_SERVERS[indicator];
        if (!info) throw new errors.InvalidTarget();
        return info;
      },
    },
    introspection: {
      enabled: true,
      // The default lets any confidential client introspect any token. Here only the
      // registered resource servers may, and they may introspect any token (the answer carries
      // `aud`, which the guard checks). Everyone else learns only {"active": false}.
      allowedPolicy: async (ctx, caller) => INTROSPECTORS.has(caller.clientId),
    },
    revocation: {
      enabled: true,
      // Only the client a token was issued to may revoke it.
      allowedPolicy: async (ctx, caller, token) => {
        if (caller.clientId !== token.clientId) {
          throw new errors.InvalidRequest('only the client a token was issued to may revoke it');
        }
        return true;
      },
    },
  },
});

// ---------------------------------------------------------------- counters and the bearer shim
const stats = {
  introspection: 0, introspection_by_client: {}, introspection_bearer_refused: 0,
  token: 0, token_by_client: {}, revocation: 0,
};
const bump = (map, key) => { map[key] = (map[key] ?? 0) + 1; };
const INTROSPECTION_PATH = new URL(`${issuer}/token/introspection`).pathname;
const gatewayBasic = `Basic ${Buffer.from(`bearer-gateway:${GATEWAY_SECRET}`).toString('base64')}`;

provider.use(async (ctx, next) => {
  if (ctx.path === '/__interop/stats' && ctx.method === 'GET') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === INTROSPECTION_PATH && ctx.method === 'POST') {
    stats.introspection += 1;
    let caller;
    // SMART Token Introspection: "SHALL accept an appropriately scoped SMART App or Backend
    // Services bearer token". oidc-provider's introspection endpoint only does client
    // authentication, so check the bearer token against oidc-provider's own token store and,
    // if it is a live token carrying the introspection scope, introspect as bearer-gateway.
    const authorization = ctx.headers.authorization ?? '';
    if (/^bearer /i.test(authorization)) {
      const value = authorization.slice(7).trim();
      const token = await provider.ClientCredentials.find(value);
      if (!token?.isValid || !token.scopes.has(INTROSPECTION_SCOPE)) {
        stats.introspection_bearer_refused += 1;
        ctx.status = 401;
        ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"');
        ctx.body = { error: 'invalid_token', error_description: 'invalid bearer token for introspection' };
        return;
      }
      caller = `bearer:${token.clientId}`;
      ctx.headers.authorization = gatewayBasic;
    }
    await next();
    // Who got an answer (200); refused callers are counted by status.
    bump(
      stats.introspection_by_client,
      ctx.status === 200 ? caller ?? ctx.oidc?.client?.clientId : `refused(${ctx.status})`,
    );
    return;
  }
  if (ctx.path === '/token' && ctx.method === 'POST') {
    stats.token += 1;
    await next();
    bump(stats.token_by_client, ctx.status === 200 ? ctx.oidc?.client?.clientId : `refused(${ctx.status})`);
    return;
  }
  if (ctx.path === '/token/revocation' && ctx.method === 'POST') stats.revocation += 1;
  await next();
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, port, pid: process.pid })}\n`);

if (args['watch-stdin']) {
  // Exit with the parent: the test harness keeps our stdin open while it lives.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
