// The OpenID provider the identity filters' tests run against: `oidc-provider` (OpenID
// Certified), installed by `cargo xtask oidc-provider` into target/oidc-provider, started by
// tests/src/oidc.rs as `node tests/oidc-provider/server.cjs` with NODE_PATH pointing there.
//
// It listens on 127.0.0.1 (port 0 unless TOLLGATE_OIDC_PORT says otherwise), so the issuer is
// only known once listening: it prints one JSON line `{"issuer": ...}` on stdout, then serves
// until killed. Options come from the environment (seconds):
//   TOLLGATE_OIDC_ACCESS_TTL   access token lifetime (default 300)
//   TOLLGATE_OIDC_ID_TTL       ID token lifetime (default 300)
//
// Test clients (secrets are test fixtures, never used elsewhere):
//   tollgate-web          the `oidc` filter: code flow with PKCE (S256 required), refresh tokens,
//                         RP-initiated logout; a native (loopback) client, so any 127.0.0.1 port
//                         matches its redirect URIs (RFC 8252, 7.3): Envoy's port is picked late.
//   tollgate-gateway      the `oauth2-introspection` filter: introspects (client_secret_basic).
//   tollgate-service      a machine client: client_credentials access tokens for
//                         https://api.tollgate.test with scopes orders:read orders:write.
// Test user: `alice` (any password, via the provider's development login and consent pages);
// any other login is refused by findAccount.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { Provider } = require('oidc-provider');

const ttl = (name, fallback) => {
  const value = Number.parseInt(process.env[name] ?? '', 10);
  return Number.isFinite(value) && value > 0 ? value : fallback;
};

const API = 'https://api.tollgate.test';

const users = {
  alice: {
    sub: 'alice',
    email: 'alice@tollgate.test',
    email_verified: true,
    name: 'Alice Liddell',
    groups: ['admins', 'staff'],
  },
};

function signingKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = rsa.privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: 'rsa-1', use: 'sig', alg: 'RS256' }] };
}

const server = http.createServer();
server.listen(ttl('TOLLGATE_OIDC_PORT', 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'tollgate-web',
        client_secret: 'tollgate-web-secret',
        application_type: 'native',
        redirect_uris: ['http://127.0.0.1/oidc/callback'],
        // TOLLGATE_OIDC_POST_LOGOUT: one more, with the relying party's port (matched exactly).
        post_logout_redirect_uris: ['http://127.0.0.1/', process.env.TOLLGATE_OIDC_POST_LOGOUT]
          .filter(Boolean),
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'tollgate-gateway',
        client_secret: 'tollgate-gateway-secret',
        redirect_uris: [],
        response_types: [],
        grant_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'tollgate-service',
        client_secret: 'tollgate-service-secret',
        redirect_uris: [],
        response_types: [],
        grant_types: ['client_credentials'],
        scope: 'orders:read orders:write',
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: signingKeys(),
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    pkce: { methods: ['S256'], required: () => true },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'orders:read', 'orders:write'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    async findAccount(_ctx, id) {
      const user = users[id];
      if (!user) return undefined;
      return { accountId: id, claims: async () => ({ ...user }) };
    },
    // The consent page grants what was asked; refresh tokens for the web client's code flow.
    async issueRefreshToken(_ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    features: {
      devInteractions: { enabled: true },
      introspection: {
        enabled: true,
        // Only the gateway client may introspect (and any token, not only its own).
        allowedPolicy: async (ctx) => ctx.oidc.client.clientId === 'tollgate-gateway',
      },
      revocation: { enabled: true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => API,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== API) throw new Error(`unknown resource ${resource}`);
          return {
            scope: 'orders:read orders:write',
            audience: API,
            accessTokenTTL: ttl('TOLLGATE_OIDC_ACCESS_TTL', 300),
            accessTokenFormat: 'opaque',
          };
        },
      },
    },
    ttl: {
      AccessToken: ttl('TOLLGATE_OIDC_ACCESS_TTL', 300),
      ClientCredentials: ttl('TOLLGATE_OIDC_ACCESS_TTL', 300),
      IdToken: ttl('TOLLGATE_OIDC_ID_TTL', 300),
      RefreshToken: 3600,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  });
  // Dev interactions and cookies over plain http on 127.0.0.1: the tests' loopback setup.
  provider.on('server_error', (_ctx, error) => console.error('server_error', error));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
