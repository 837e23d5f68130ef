// What tests and curious people can look at: `window.stepwise`, holding the notifications
// shown, the WebSocket paths connected to and the script errors seen. Every module that
// records something imports it, so it exists before any of them runs.

export const debug = (window.stepwise = window.stepwise || {
  notifications: [],
  connections: [],
  errors: [],
});
window.addEventListener("error", (e) => debug.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => debug.errors.push(String(e.reason)));
