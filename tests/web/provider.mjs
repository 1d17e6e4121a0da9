// A real OpenID provider (oidc-provider) for the portal's browser tests,
// on 127.0.0.1 at a free port. Prints `ready <issuer>` on stdout once it
// listens. Started by tests/src/oidc.rs; installed by scripts/web/install.
//
// Environment:
//   CLIENT_ID       the portal's client id (public client: PKCE, no secret)
//   REDIRECT_URIS   comma-separated callback URLs of the portal(s)
//
// Users (password "pass" for all), each with the claims the portal maps:
//   ada    preferred_username ada@contoso.example    login amr ["pwd","mfa"]
//   grace  preferred_username grace@contoso.example  login amr ["pwd","mfa"]
//   bob    preferred_username ada@contoso.example    login amr ["pwd"] only
// and each an onprem_anchor claim: the account's base64 objectGUID.
//
// The login and consent steps are plain HTML forms (no script), so the
// browser drives them by keyboard; consent is granted without a page.
import http from 'node:http';
import Provider from 'oidc-provider';

const clientId = process.env.CLIENT_ID || 'reset-portal';
const redirectUris = (process.env.REDIRECT_URIS || '').split(',').filter(Boolean);
if (redirectUris.length === 0) {
  console.error('REDIRECT_URIS is required');
  process.exit(2);
}

const USERS = {
  ada: {
    username: 'ada@contoso.example', anchor: 'LkwaO199ik6bbB0uP0BRYg==', name: 'Ada Lovelace', amr: ['pwd', 'mfa'],
  },
  grace: {
    username: 'grace@contoso.example', anchor: 'Sm4tjzscXUqOf6CxwtPk9Q==', name: 'Grace Hopper', amr: ['pwd', 'mfa'],
  },
  // Same account as ada, but signs in with a password only.
  bob: {
    username: 'ada@contoso.example', anchor: 'LkwaO199ik6bbB0uP0BRYg==', name: 'Ada (password only)', amr: ['pwd'],
  },
};

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    redirect_uris: redirectUris,
    // Each portal's start page, for RP-initiated logout.
    post_logout_redirect_uris: redirectUris.map((u) => u.replace(/\/signin\/callback$/, '/')),
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'none',
  }],
  pkce: { required: () => true },
  // Put the profile claims in the ID token, where the portal reads them.
  conformIdTokenClaims: false,
  // oidc-provider puts acr and amr in the ID token only when asked for;
  // here the openid scope asks, as many providers do by default.
  claims: {
    acr: null,
    amr: null,
    auth_time: null,
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    // onprem_anchor: the account's base64 objectGUID (the portal's
    // anchor = "source_anchor").
    profile: ['preferred_username', 'name', 'onprem_anchor'],
    email: ['email'],
  },
  cookies: { keys: ['browser-test-only'] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id, preferred_username: user.username, name: user.name, email: user.username, onprem_anchor: user.anchor,
        };
      },
    };
  },
});
const callback = provider.callback();
provider.on('grant.success', (ctx) => {
  const idToken = ctx.body?.id_token;
  if (idToken) console.error(`provider: id_token ${Buffer.from(idToken.split('.')[1], 'base64url')}`);
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head>`
    + `<body><main><h1>${escape(title)}</h1>${body}</main></body></html>`;
}

function loginForm(uid, message) {
  return page('Test provider: sign in', `${message ? `<p id="error" role="alert">${escape(message)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${escape(uid)}/login">
<label for="login">User</label> <input id="login" name="login" autocomplete="username">
<label for="password">Password</label> <input id="password" name="password" type="password">
<button id="signin" type="submit">Sign in</button>
</form>`);
}

async function body(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return new URLSearchParams(text);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(loginForm(uid));
      return;
    }
    if (action !== 'login') throw new Error('unexpected action');
    const form = await body(req);
    const id = form.get('login');
    if (!USERS[id] || form.get('password') !== 'pass') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(loginForm(uid, 'Unknown user or wrong password.'));
      return;
    }
    // The method list the portal checks (`required_amr`).
    const result = { login: { accountId: id, amr: USERS[id].amr, acr: 'urn:test:loa:1', remember: false } };
    console.error(`provider: ${id} signed in with amr ${USERS[id].amr.join(',')}`);
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    console.error(`provider: consent for ${session.accountId}, amr ${JSON.stringify(session.amr)}`);
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  throw new Error(`unknown prompt ${prompt.name}`);
}

server.on('request', (req, res) => {
  const match = /^\/interaction\/([^/?]+)(?:\/(login))?(?:\?.*)?$/.exec(req.url);
  if (!match) {
    callback(req, res);
    return;
  }
  interaction(req, res, match[1], match[2]).catch((err) => {
    console.error(err);
    res.writeHead(400, { 'content-type': 'text/plain' });
    res.end(`interaction failed: ${err.message}\n`);
  });
});

console.log(`ready ${issuer}`);
