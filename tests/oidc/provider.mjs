// A real OpenID provider for the dashboard's sign-in tests: panva's oidc-provider, configured
// from the environment and started by tests/src/oidc.rs (`OidcProvider::start`).
//
// One confidential client (client_secret_basic), the authorization code flow only, PKCE S256
// required, no consent screen for that client, RP-initiated logout, and `prompt=none`. The login
// page is oidc-provider's own development login form: any password signs in, and the login name is
// the account id (`sub`).
//
// Environment:
//   OIDC_PORT                  port on 127.0.0.1; the issuer is http://127.0.0.1:OIDC_PORT
//   CLIENT_ID, CLIENT_SECRET   the one registered client
//   REDIRECT_URIS              comma-separated redirect URIs of that client
//   POST_LOGOUT_REDIRECT_URIS  comma-separated, optional
//   ACCOUNTS_JSON              {"alice": {"name": "…", "email": "…", "groups": ["…"]}, …}; a login
//                              that is not in the map signs in with no claims but `groups: []`
//   ID_TOKEN_TTL_SECS          ID token lifetime (default 3600)
//   KEYS_FILE                  optional: a private JWKS to sign with, written on first use; without
//                              it a fresh RS256 key (random kid) is made at every start, so a
//                              restart on the same port is a key rotation
//
// Negative tests: `POST /__test/tamper` with `{"mode": M}` alters the id_token of the NEXT token
// endpoint response, then the mode resets. Modes: forge (signed by another key under the same kid),
// expired, nonce, audience, issuer (re-signed with the real key), none (alg none, no signature).
//
// Prints `oidc-provider listening on http://127.0.0.1:PORT` when ready.

import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import {
  CompactSign, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK,
} from 'jose';
import Provider from 'oidc-provider';

/** Where the token endpoint is (stated in the configuration too, so the tamper hook can match it). */
const TOKEN_PATH = '/token';
const TAMPER_PATH = '/__test/tamper';
const TAMPER_MODES = new Set(['forge', 'expired', 'nonce', 'audience', 'issuer', 'none']);
const ALG = 'RS256';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

function list(value) {
  return (value || '').split(',').map((item) => item.trim()).filter(Boolean);
}

function positiveInteger(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback ?? required(name);
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`provider.mjs: ${name} must be a positive integer, not ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const PORT = positiveInteger('OIDC_PORT');
const ISSUER = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = required('CLIENT_ID');
const CLIENT_SECRET = required('CLIENT_SECRET');
const REDIRECT_URIS = list(required('REDIRECT_URIS'));
const POST_LOGOUT_REDIRECT_URIS = list(process.env.POST_LOGOUT_REDIRECT_URIS);
const ACCOUNTS = JSON.parse(process.env.ACCOUNTS_JSON || '{}');
const ID_TOKEN_TTL_SECS = positiveInteger('ID_TOKEN_TTL_SECS', 3600);

/** A fresh RS256 signing key as a private JWK with a random kid. */
async function freshKey() {
  const { privateKey } = await generateKeyPair(ALG, { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: ALG, use: 'sig' };
}

/** The signing JWKS: KEYS_FILE's when it exists (made there on first use), else a new key. */
async function signingKeys() {
  const file = process.env.KEYS_FILE;
  if (file && existsSync(file)) return JSON.parse(await readFile(file, 'utf8'));
  const jwks = { keys: [await freshKey()] };
  if (file) await writeFile(file, JSON.stringify(jwks), { mode: 0o600 });
  return jwks;
}

const jwks = await signingKeys();
const signingJwk = jwks.keys[0];
const signingKey = await importJWK(signingJwk, ALG);

/** The account behind a login name; unknown logins exist too, with no groups. */
function findAccount(ctx, sub) {
  const known = Object.hasOwn(ACCOUNTS, sub) ? ACCOUNTS[sub] : {};
  return {
    accountId: sub,
    async claims() {
      return { ...known, sub, groups: known.groups ?? [] };
    },
  };
}

/**
 * The registered client is first-party: its grant covers whatever OpenID scopes and claims it asks
 * for, so the flow never stops at a consent screen (authorize → login → back to the RP).
 */
async function loadExistingGrant(ctx) {
  const { client, session, provider } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant = grantId ? await provider.Grant.find(grantId) : undefined;
  if (!grant) grant = new provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  const scopes = [...ctx.oidc.requestParamOIDCScopes];
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const claims = [...ctx.oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: REDIRECT_URIS,
    post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: ALG,
  }],
  jwks,
  findAccount,
  loadExistingGrant,
  // name, email and groups go into the ID token itself, not only the userinfo response.
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    profile: ['name', 'groups'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid'],
  responseTypes: ['code'],
  clientAuthMethods: ['client_secret_basic'],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  routes: { token: TOKEN_PATH },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  clientBasedCORS: () => false,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: ID_TOKEN_TTL_SECS,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
});

// The one mode waiting for the next token response, or null.
let tamperMode = null;

function base64url(text) {
  return Buffer.from(text).toString('base64url');
}

async function resign(header, claims, key) {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader(header)
    .sign(key);
}

/** The ID token altered as `mode` says. */
async function tamper(idToken, mode) {
  const header = decodeProtectedHeader(idToken);
  const claims = decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'forge': {
      // Same header (kid included) and claims, signed by a key the provider never published.
      const { privateKey } = await generateKeyPair(ALG);
      return resign(header, claims, privateKey);
    }
    case 'expired':
      return resign(header, { ...claims, exp: now - 60, iat: now - 3660 }, signingKey);
    case 'nonce':
      return resign(header, { ...claims, nonce: randomBytes(16).toString('base64url') }, signingKey);
    case 'audience':
      return resign(header, { ...claims, aud: 'someone-else' }, signingKey);
    case 'issuer':
      return resign(header, { ...claims, iss: 'http://evil.example' }, signingKey);
    case 'none': {
      const { kid, ...rest } = header;
      return `${base64url(JSON.stringify({ ...rest, alg: 'none' }))}.${base64url(JSON.stringify(claims))}.`;
    }
    default:
      throw new Error(`unknown tamper mode ${mode}`);
  }
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

provider.use(async (ctx, next) => {
  if (ctx.path === TAMPER_PATH) {
    if (ctx.method !== 'POST') ctx.throw(405);
    let body;
    try {
      body = await readJson(ctx.req);
    } catch {
      ctx.throw(400, 'the body is not JSON');
    }
    if (!TAMPER_MODES.has(body.mode)) ctx.throw(400, `mode must be one of ${[...TAMPER_MODES].join(', ')}`);
    tamperMode = body.mode;
    console.log(`tamper: the next token response's id_token will be altered (${tamperMode})`);
    ctx.status = 204;
    return;
  }

  await next();

  if (ctx.path === TOKEN_PATH && tamperMode && ctx.status === 200 && typeof ctx.body?.id_token === 'string') {
    const mode = tamperMode;
    tamperMode = null;
    ctx.body = { ...ctx.body, id_token: await tamper(ctx.body.id_token, mode) };
    console.log(`tamper: altered the id_token of this token response (${mode})`);
  }
});

provider.listen(PORT, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${ISSUER}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
