// A small client of Janus's HTTP API, over plain fetch: a session, plugin handles on it,
// and the session's long poll, which both keeps the session alive and carries every
// asynchronous event (https://janus.conf.meetecho.com/docs/rest.html).

const EVENTS_PER_POLL = 10;
const ANSWER_TIMEOUT_MS = 10000;

export class JanusError extends Error {
  constructor(message, code = 0) {
    super(message);
    this.code = code;
  }
}

// getRandomValues, not randomUUID: the page may be served over plain http.
function transactionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function post(url, message) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...message, transaction: message.transaction || transactionId() }),
  });
  if (!response.ok) throw new JanusError(`Janus answered ${response.status}`);
  const answer = await response.json();
  if (answer.janus === "error") {
    throw new JanusError(answer.error?.reason || "Janus refused", answer.error?.code);
  }
  return answer;
}

export class JanusSession {
  static async open(url) {
    const base = url.replace(/\/+$/, "");
    const answer = await post(base, { janus: "create" });
    return new JanusSession(`${base}/${answer.data.id}`);
  }

  constructor(url) {
    this.url = url;
    this.handles = new Map();
    this.waiting = new Map(); // transaction -> the answer's resolve
    this.polling = new AbortController();
    // Settles with the reason the session ended; it ends only if Janus forgets it, Janus
    // cannot be reached, or close() is called.
    this.lost = this.poll();
  }

  async attach(plugin) {
    const answer = await post(this.url, { janus: "attach", plugin });
    const handle = new JanusHandle(this, answer.data.id);
    this.handles.set(handle.id, handle);
    return handle;
  }

  // The event that will answer `transaction` (an asynchronous plugin request), and a
  // way to stop waiting for it (Janus answered at once, or the request failed).
  answerTo(transaction) {
    let timer;
    const answer = new Promise((resolve, reject) => {
      timer = setTimeout(() => {
        this.waiting.delete(transaction);
        reject(new JanusError("Janus did not answer in time"));
      }, ANSWER_TIMEOUT_MS);
      this.waiting.set(transaction, (event) => {
        clearTimeout(timer);
        resolve(event);
      });
    });
    answer.catch(() => {}); // awaited only once the post is answered
    const forget = () => {
      clearTimeout(timer);
      this.waiting.delete(transaction);
    };
    return { answer, forget };
  }

  async poll() {
    for (;;) {
      let events;
      try {
        const response = await fetch(`${this.url}?maxev=${EVENTS_PER_POLL}&rid=${Date.now()}`, {
          signal: this.polling.signal,
        });
        if (!response.ok) return `Janus answered ${response.status}`;
        events = await response.json();
      } catch (error) {
        return this.polling.signal.aborted ? "closed" : `Janus is unreachable: ${error.message}`;
      }
      for (const event of Array.isArray(events) ? events : [events]) {
        if (event.janus === "error") return `Janus: ${event.error?.reason}`;
        this.dispatch(event);
      }
    }
  }

  dispatch(event) {
    const answer = event.janus === "event" && this.waiting.get(event.transaction);
    if (answer) {
      this.waiting.delete(event.transaction);
      answer(event);
      return;
    }
    this.handles.get(event.sender)?.onevent?.(event);
  }

  close() {
    this.polling.abort();
    post(this.url, { janus: "destroy" }).catch(() => {});
  }
}

export class JanusHandle {
  constructor(session, id) {
    this.session = session;
    this.id = id;
    this.url = `${session.url}/${id}`;
    this.onevent = null; // events that answer no request of ours
  }

  // A plugin request: { data, jsep } of its answer, whether Janus answers at once or
  // (an asynchronous request: join, start...) with an event later.
  async request(body, jsep) {
    const transaction = transactionId();
    const message = { janus: "message", body, transaction };
    if (jsep) message.jsep = jsep;
    // Waited for before posting: the event may come before the post's own answer.
    const later = this.session.answerTo(transaction);
    let answer;
    try {
      answer = await post(this.url, message);
    } catch (error) {
      later.forget();
      throw error;
    }
    if (answer.janus === "ack") answer = await later.answer;
    else later.forget();
    const data = answer.plugindata?.data || {};
    if (data.error_code) throw new JanusError(data.error, data.error_code);
    return { data, jsep: answer.jsep };
  }

  // Every candidate of ours is in the SDP already: Janus waits for this before it
  // calls ICE done (it assumes trickle otherwise).
  async endOfCandidates() {
    await post(this.url, { janus: "trickle", candidate: { completed: true } });
  }

  detach() {
    this.session.handles.delete(this.id);
    post(this.url, { janus: "detach" }).catch(() => {});
  }
}
