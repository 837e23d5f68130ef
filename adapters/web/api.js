// The visitor's token (kept in localStorage until sign-out), the way to sign in when there
// is none, and calls to the server's JSON API with it.

const TOKEN_KEY = "stepwise.token";

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
  location.replace("/login?" + query);
}

/// The token, or off to /login.
export function requireToken() {
  const value = token();
  if (!value) {
    toLogin();
    throw new Error("not signed in");
  }
  return value;
}

/// The header's sign-out button.
export function wireSignOut() {
  const button = document.getElementById("sign-out");
  if (!button) return;
  button.addEventListener("click", () => {
    forgetToken();
    location.assign("/login?reason=signed-out");
  });
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/// Calls the API with the token; answers the JSON body or throws an ApiError. A 401 sends
/// the visitor to sign in again.
export async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + (token() || ""), Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
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
    if (response.status === 401) {
      forgetToken();
      toLogin("expired");
    }
    throw new ApiError(response.status, code, message);
  }
  return data;
}
