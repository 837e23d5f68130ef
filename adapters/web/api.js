// Where Stepwise lives on this server, the visitor's token (kept in localStorage until
// sign-out), the way to sign in when there is none, and calls to the server's JSON API with
// it. An application that embeds Stepwise may sign its users in itself: then there is no
// token, and the browser's cookies go with every call.

const TOKEN_KEY = "stepwise.token";

/// What the page's <meta name="stepwise"> says: Stepwise's root on this server ("" or a
/// path such as "/stepwise"), and whether the application signs visitors in.
const site = document.querySelector('meta[name="stepwise"]');
const ROOT = site ? site.dataset.root : "";
export const SIGNED_IN_BY_APPLICATION = !!site && site.dataset.signIn === "application";

/// `path` (from Stepwise's root, starting with "/") as a path on this server.
export function at(path) {
  return ROOT + path;
}

/// A path on this server (`location.pathname`) as a path from Stepwise's root.
export function fromRoot(pathname) {
  return pathname.startsWith(ROOT + "/") ? pathname.slice(ROOT.length) : pathname;
}

export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  localStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/// Sends a visitor without a (working) token to sign in, and back here afterwards.
export function toLogin(reason) {
  const next = location.pathname + location.search;
  const query = new URLSearchParams({ next });
  if (reason) query.set("reason", reason);
  location.replace(at("/login?") + query);
}

/// The token, or off to /login; nothing to do when the application signs visitors in.
export function requireToken() {
  if (SIGNED_IN_BY_APPLICATION) return;
  if (!token()) {
    toLogin();
    throw new Error("not signed in");
  }
}

/// The header's sign-out button; the application's own, if it signs visitors in.
export function wireSignOut() {
  const button = document.getElementById("sign-out");
  if (!button) return;
  if (SIGNED_IN_BY_APPLICATION) {
    button.hidden = true;
    return;
  }
  button.addEventListener("click", () => {
    forgetToken();
    location.assign(at("/login?reason=signed-out"));
  });
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/// Calls the API at `path` (from Stepwise's root) with the token; answers the JSON body or
/// throws an ApiError. A 401 sends the visitor to sign in again (with a token; the
/// application's refusal is the error's message).
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (!SIGNED_IN_BY_APPLICATION) headers.Authorization = "Bearer " + (token() || "");
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(at(path), init);
  } catch (error) {
    throw new ApiError(0, "network", "The server cannot be reached; check your connection.");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const code = (data && data.error && data.error.code) || "http_" + response.status;
    const message = (data && data.error && data.error.message) || response.statusText || "request failed";
    if (response.status === 401 && !SIGNED_IN_BY_APPLICATION) {
      forgetToken();
      toLogin("expired");
    }
    throw new ApiError(response.status, code, message);
  }
  return data;
}
