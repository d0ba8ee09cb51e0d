// The official MCP TypeScript SDK client against authserver (driven by tests/test_mcp_ts_sdk_e2e.py).
//
//   node tests/interop_ts/client.mjs <mcp server url> [<issuer>]
//
// Connects with StreamableHTTPClientTransport and an in-memory OAuthClientProvider. The SDK meets
// the server's 401, discovers the authorization server (RFC 9728 + RFC 8414), registers (RFC 7591)
// and builds the authorization URL; redirectToAuthorization prints it and the script reads one
// line from stdin: the callback URL the browser was sent to. It checks `state` and `iss` (RFC 9207,
// against the issuer given, else the one the SDK discovered), calls transport.finishAuth(code) and
// connects again with a new transport, the SDK's documented pattern for UnauthorizedError. Then it
// lists the tools and calls list_events.
//
// Every step is one JSON line on stdout ({"step": ...}); the last is {"step": "done"} or
// {"step": "error"}. Every HTTP exchange the SDK makes is a {"step": "http"} line.

import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const REDIRECT_URL = 'http://127.0.0.1:53682/callback'; // loopback (RFC 8252): nothing needs to listen

const [serverUrl, expectedIssuer] = process.argv.slice(2);
if (!serverUrl) {
    process.stderr.write('usage: node client.mjs <mcp server url> [<issuer>]\n');
    process.exit(2);
}

function emit(step, fields = {}) {
    process.stdout.write(JSON.stringify({ step, ...fields }) + '\n');
}

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();

async function readLine() {
    const { value, done } = await lines.next();
    if (done) throw new Error('stdin closed before the callback URL arrived');
    return value.trim();
}

/** The SDK's OAuthClientProvider, in memory. */
class MemoryProvider {
    constructor() {
        this.authorizationUrls = [];
        this._clientInformation = undefined;
        this._tokens = undefined;
        this._codeVerifier = undefined;
        this._state = undefined;
    }

    get redirectUrl() {
        return REDIRECT_URL;
    }

    get clientMetadata() {
        return {
            client_name: 'MCP TypeScript SDK interop client',
            redirect_uris: [REDIRECT_URL],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: 'none',
        };
    }

    state() {
        this._state = randomBytes(16).toString('base64url');
        return this._state;
    }

    clientInformation() {
        return this._clientInformation;
    }

    saveClientInformation(info) {
        this._clientInformation = info;
        emit('registered', { client_id: info.client_id, token_endpoint_auth_method: info.token_endpoint_auth_method ?? null,
                             has_secret: Boolean(info.client_secret) });
    }

    tokens() {
        return this._tokens;
    }

    saveTokens(tokens) {
        this._tokens = tokens;
        emit('tokens', { token_type: tokens.token_type, scope: tokens.scope ?? null, expires_in: tokens.expires_in ?? null,
                         has_access_token: Boolean(tokens.access_token), has_refresh_token: Boolean(tokens.refresh_token) });
    }

    redirectToAuthorization(authorizationUrl) {
        this.authorizationUrls.push(authorizationUrl.href);
        emit('authorize', { url: authorizationUrl.href });
    }

    saveCodeVerifier(codeVerifier) {
        this._codeVerifier = codeVerifier;
    }

    codeVerifier() {
        if (!this._codeVerifier) throw new Error('no code verifier saved');
        return this._codeVerifier;
    }

    invalidateCredentials(scope) {
        emit('invalidate', { scope });
        if (scope === 'all' || scope === 'client') this._clientInformation = undefined;
        if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
        if (scope === 'all' || scope === 'verifier') this._codeVerifier = undefined;
    }
}

/** fetch that reports every exchange (never a token or a secret: only names and statuses). */
async function loggingFetch(input, init) {
    const request = new Request(input, init);
    const url = request.url;
    let form = null;
    if (request.method === 'POST' && (request.headers.get('content-type') ?? '').startsWith('application/x-www-form-urlencoded')) {
        const body = new URLSearchParams(await request.clone().text());
        form = {
            keys: [...body.keys()].sort(),
            grant_type: body.get('grant_type'),
            resource: body.get('resource'),
            client_id: body.get('client_id'),
            redirect_uri: body.get('redirect_uri'),
        };
    }
    let json = null;
    if (request.method === 'POST' && url.endsWith('/register')) {
        json = JSON.parse(await request.clone().text());
    }
    const response = await fetch(request);
    let error = null;
    if (!response.ok && (response.headers.get('content-type') ?? '').includes('json')) {
        error = await response.clone().json().catch(() => null);
    }
    emit('http', { method: request.method, url, status: response.status,
                   www_authenticate: response.headers.get('www-authenticate'),
                   authorization: request.headers.get('authorization')?.split(' ')[0] ?? null,
                   form, json, error });
    return response;
}

async function waitForCallback(provider, transport) {
    const callback = new URL(await readLine());
    emit('callback', { url_without_code: callback.origin + callback.pathname });
    const params = callback.searchParams;
    if (params.get('error')) throw new Error(`authorization refused: ${params.get('error')} ${params.get('error_description') ?? ''}`);
    if (callback.origin + callback.pathname !== REDIRECT_URL) throw new Error(`callback at ${callback.href}, expected ${REDIRECT_URL}`);
    if (params.get('state') !== provider._state) throw new Error('state mismatch');
    // RFC 9207: refuse a response from another server than the one we asked.
    const issuer = expectedIssuer ?? new URL(provider.authorizationUrls.at(-1)).origin;
    if (params.get('iss') !== issuer) throw new Error(`iss ${params.get('iss')} is not ${issuer}`);
    emit('iss_checked', { iss: params.get('iss') });
    const code = params.get('code');
    if (!code) throw new Error('no code in the callback');
    await transport.finishAuth(code);
    emit('finished_auth');
}

async function connect(provider, attempt = 1) {
    const client = new Client({ name: 'authserver-interop-ts', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider, fetch: loggingFetch });
    try {
        await client.connect(transport);
        emit('connected', { attempt, protocol_version: transport.protocolVersion ?? null,
                            server: client.getServerVersion()?.name ?? null });
        return client;
    } catch (error) {
        if (!(error instanceof UnauthorizedError) || attempt > 1) throw error;
        emit('unauthorized', { attempt, message: error.message });
        await waitForCallback(provider, transport);
        return connect(provider, attempt + 1);
    }
}

async function main() {
    const provider = new MemoryProvider();
    const client = await connect(provider);
    const tools = await client.listTools();
    emit('list_tools', { names: tools.tools.map((t) => t.name).sort() });
    const result = await client.callTool({ name: 'list_events', arguments: {} });
    emit('call_tool', { name: 'list_events', is_error: Boolean(result.isError),
                        structured_content: result.structuredContent ?? null, content: result.content });
    await client.close();
    emit('done');
}

main().then(
    () => process.exit(0),
    (error) => {
        emit('error', { name: error?.name ?? null, message: String(error?.message ?? error) });
        process.exit(1);
    },
);
