// The console's only window on the server: the public HTTP API (CRUD, search, schemas,
// login, actions). The credential lives in sessionStorage (never a cookie) and is sent as
// `Authorization: Bearer` (a login token) or `X-API-Key` (a pasted key).

const STORAGE_KEY = "aether.console.credential";

/** The API's root: the path above `/console/` (so the console works under a prefix). */
export const ROOT = window.location.pathname.replace(/\/console(\/.*)?$/, "");

export class Problem extends Error {
  constructor(status, body, headers) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.headers = headers;
  }
  get errors() {
    return Array.isArray(this.body.errors) ? this.body.errors : [];
  }
}

export function loadCredential() {
  try {
    const raw = window.sessionStorage.getItem(STORAGE_KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

export function saveCredential(credential) {
  if (credential) window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credential));
  else window.sessionStorage.removeItem(STORAGE_KEY);
}

export function authHeaders(credential) {
  if (!credential) return {};
  if (credential.kind === "bearer") return { Authorization: `Bearer ${credential.value}` };
  return { "X-API-Key": credential.value };
}

/** The claims of a JWT (unverified: only to choose which buttons to show). */
export function jwtClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}

async function readBody(response) {
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 204 || response.status === 304) return null;
  if (type.includes("json")) return response.json();
  return response.text();
}

/** One request; resolves `{status, body, headers}` on 2xx, throws a `Problem` otherwise. */
export async function request(credential, method, path, { body, headers = {}, query } = {}) {
  let url = ROOT + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, value);
    }
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const init = { method, headers: { Accept: "application/json", ...authHeaders(credential), ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  const parsed = await readBody(response);
  if (response.status === 401 && credential) expired();
  if (!response.ok) throw new Problem(response.status, typeof parsed === "object" ? parsed : { detail: parsed }, response.headers);
  return { status: response.status, body: parsed, headers: response.headers };
}

/** Tells the app its credential was refused (expired token, revoked key). */
export const EXPIRED_EVENT = "aether:credential-refused";

function expired() {
  window.dispatchEvent(new CustomEvent(EXPIRED_EVENT));
}

export async function login(account, email, password) {
  const { body } = await request(null, "POST", "/v3/auth/login", { body: { account, email, password } });
  return { kind: "bearer", value: body.access_token };
}

/** Uploads `files` to `path` as multipart with XHR, reporting progress as 0..1. */
export function upload(credential, path, files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", ROOT + path);
    for (const [key, value] of Object.entries(authHeaders(credential))) xhr.setRequestHeader(key, value);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onerror = () => reject(new Problem(0, { detail: "The upload could not reach the server" }));
    xhr.onload = () => {
      let parsed = {};
      try {
        parsed = JSON.parse(xhr.responseText);
      } catch {
        parsed = { detail: xhr.responseText };
      }
      if (xhr.status === 401) expired();
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(parsed);
      } else reject(new Problem(xhr.status, parsed));
    };
    xhr.send(form);
  });
}

/** Fetches a blob by its SHA-256 (with the credential) and saves it under `name`. */
export async function downloadBlob(credential, sha256, name) {
  const response = await fetch(`${ROOT}/v3/action/blob/${encodeURIComponent(sha256)}`, {
    headers: authHeaders(credential),
  });
  if (!response.ok) {
    const parsed = await readBody(response);
    throw new Problem(response.status, typeof parsed === "object" ? parsed : { detail: parsed });
  }
  const url = URL.createObjectURL(await response.blob());
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = name || sha256;
  document.body.appendChild(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
