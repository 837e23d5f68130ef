// The live WebSocket to the API: it reconnects by itself with backoff and resumes where it
// stopped, and the page's status line says how the connection is.

import { SIGNED_IN_BY_APPLICATION, at, forgetToken, toLogin, token } from "./api.js";
import { debug } from "./debug.js";

const SUBPROTOCOL = "stepwise.v1";
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;
const PING_EVERY_MS = 20000;
const PONG_WITHIN_MS = 10000;

/// A WebSocket to the API that reconnects by itself with backoff (and at once when the
/// browser comes back online or the page becomes visible). `url()` gives the path (from
/// Stepwise's root) for the next attempt, so a task page resumes with `?after_seq=` the
/// newest seq it has.
export class LiveSocket {
  constructor({ url, onMessage, onState, onGiveUp }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState || (() => {});
    this.onGiveUp = onGiveUp || (() => {});
    this.socket = null;
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    // Tests set `window.stepwise.offline = true` to hold reconnection, as if the network
    // were down; `reconnectNow()` lifts it.
    debug.offline = false;
    debug.reconnectNow = () => {
      debug.offline = false;
      this.connectSoon(0);
    };
    Object.defineProperty(debug, "socket", { get: () => this.socket, configurable: true });
    window.addEventListener("online", () => this.connectSoon(0));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.connectSoon(0);
    });
    setInterval(() => this.ping(), PING_EVERY_MS);
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "done");
  }

  connected() {
    return this.socket && this.socket.readyState === WebSocket.OPEN;
  }

  connectSoon(delay) {
    if (this.stopped || (this.socket && this.socket.readyState <= WebSocket.OPEN)) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  connect() {
    if (this.stopped) return;
    if (debug.offline) {
      this.onState("offline");
      return;
    }
    const path = at(this.url());
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // The application's users bring its cookies; others offer their token as a subprotocol.
    const protocols = SIGNED_IN_BY_APPLICATION ? [SUBPROTOCOL] : [SUBPROTOCOL, "bearer." + (token() || "")];
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}${path}`, protocols);
    } catch (error) {
      // A token that cannot travel as a subprotocol is no token of ours.
      debug.errors.push("websocket: " + error);
      forgetToken();
      toLogin("expired");
      return;
    }
    debug.connections.push(path);
    this.socket = socket;
    this.lastHeard = Date.now();
    this.onState(this.failures ? "reconnecting" : "connecting");
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.failures = 0;
      this.onState("live");
    });
    socket.addEventListener("message", (event) => {
      this.lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type !== "pong") this.onMessage(message, this);
    });
    socket.addEventListener("close", async (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      this.failures += 1;
      if (!opened) {
        // A refused handshake says nothing to scripts: ask the API why (a 401 leads to
        // sign-in, a 404 means the task is gone).
        const reason = await this.onGiveUp();
        if (reason === "stop") return;
      }
      const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.min(this.failures - 1, 6));
      const wait = event.code === 1000 ? delay : delay * (0.5 + Math.random() / 2);
      this.onState(debug.offline ? "offline" : "reconnecting", wait);
      this.connectSoon(wait);
    });
  }

  /// An application-level ping: a connection that stays silent too long (a laptop that
  /// slept, a proxy that dropped it) is closed and reopened.
  ping() {
    if (!this.connected()) return;
    if (Date.now() - this.lastHeard > PING_EVERY_MS + PONG_WITHIN_MS) {
      this.socket.close(4000, "silent");
      return;
    }
    try {
      this.socket.send(JSON.stringify({ type: "ping" }));
    } catch {
      // closing already
    }
  }
}

/// Shows the connection's state in the page's status line.
export function showConnection(state, waitMs) {
  const line = document.getElementById("connection");
  if (!line) return;
  line.dataset.state = state;
  const words = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: waitMs ? `Connection lost; reconnecting in ${Math.max(1, Math.round(waitMs / 1000))} s…` : "Reconnecting…",
    offline: "Offline; waiting for the network…",
  };
  line.textContent = words[state] || state;
}
