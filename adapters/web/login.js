// Sign-in with an API token, kept in this browser's localStorage until sign-out.
// `/login#token=…` signs in directly (a fragment never reaches the server or its logs);
// `&next=/tasks/ID` in the fragment, or `?next=` in the query, says where to go after.

import { at, forgetToken, setToken, token } from "./api.js";

const $ = (id) => document.getElementById(id);

/// Where to go once signed in: a path on this server only.
function destination(candidate) {
  return typeof candidate === "string" && candidate.startsWith("/") && !candidate.startsWith("//") && !candidate.startsWith("/\\")
    ? candidate
    : at("/");
}

async function signIn(value, next) {
  const error = $("login-error");
  error.hidden = true;
  const trimmed = value.trim();
  if (!trimmed) {
    error.textContent = "Paste your API token.";
    error.hidden = false;
    $("token").focus();
    return;
  }
  setToken(trimmed);
  try {
    // Any authenticated read tells whether the token is good.
    await fetchCheck();
  } catch (failure) {
    forgetToken();
    error.textContent =
      failure.status === 401 ? "That token was not accepted: it is unknown or revoked." : `Could not sign in: ${failure.message}`;
    error.hidden = false;
    $("token").setAttribute("aria-invalid", "true");
    $("token").focus();
    return;
  }
  location.replace(destination(next));
}

/// GET /api/tasks?limit=1 without api()'s sign-in redirect on 401.
async function fetchCheck() {
  const response = await fetch(at("/api/tasks?limit=1"), { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error.message;
    } catch {
      // keep the status text
    }
    const failure = new Error(message);
    failure.status = response.status;
    throw failure;
  }
}

function init() {
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const next = fragment.get("next") || query.get("next") || at("/");
  if (fragment.has("token")) {
    // Out of the address bar and history at once.
    history.replaceState(null, "", location.pathname + location.search);
    signIn(fragment.get("token"), next);
    return;
  }
  const reason = query.get("reason");
  const message = {
    expired: "Your token is no longer accepted; sign in again.",
    "signed-out": "You are signed out. The token was removed from this browser.",
  }[reason];
  if (message) {
    $("message").textContent = message;
    $("message").hidden = false;
  }
  if (token() && !reason) {
    $("sign-in").hidden = true;
    $("signed-in").hidden = false;
  }
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value, next);
  });
  $("sign-out").addEventListener("click", () => {
    forgetToken();
    location.replace(at("/login?reason=signed-out"));
  });
}

init();
