// The room page: everyone publishing in /rooms/{AppId}/{RoomId}, one <video> each.
// The token comes from the URL fragment (#token=...) or the form, and is sent only in
// Authorization headers: to the participant stream and to each WHEP offer.

const [, , appId, roomId] = location.pathname.split("/").map(decodeURIComponent);
const RETRY_MS = 2000;
const ICE_GATHERING_MS = 2000;

// Tests and curious users can look at the live peers here.
const state = { publishers: new Map(), eventsConnected: false };
window.relaystreamRoom = state;

const $ = (id) => document.getElementById(id);

// Not URLSearchParams: it reads "+" as a space, and tokens are base64.
function tokenFromFragment() {
  for (const part of location.hash.slice(1).split("&")) {
    if (part.startsWith("token=")) return decodeURIComponent(part.slice(6));
  }
  return null;
}

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function askForToken(message) {
  $("room").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
}

class Refused extends Error {}

// --- the participant list, over server-sent events read with fetch ---------------

async function followRoom(token) {
  for (;;) {
    try {
      await readEvents(token);
      showStatus("Reconnecting…");
    } catch (error) {
      if (error instanceof Refused) {
        closeAll();
        showStatus("Signed out", true);
        askForToken(error.message);
        return;
      }
      showStatus(`Reconnecting: ${error.message}`, true);
    }
    state.eventsConnected = false;
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

async function readEvents(token) {
  const url = `/rooms/${encodeURIComponent(appId)}/${encodeURIComponent(roomId)}/events`;
  const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  if (response.status === 401 || response.status === 403) {
    throw new Refused(`The token was refused: ${(await response.text()).trim()}`);
  }
  if (!response.ok) throw new Error(`events answered ${response.status}`);
  state.eventsConnected = true;
  showStatus("Live");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      onEvent(buffer.slice(0, end), token);
      buffer = buffer.slice(end + 2);
    }
  }
}

function onEvent(block, token) {
  let name = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return; // a keep-alive comment
  const payload = JSON.parse(data);
  if (name === "snapshot") {
    const present = new Set(payload.publishers.map((p) => p.userId));
    for (const userId of [...state.publishers.keys()]) {
      if (!present.has(userId)) removePublisher(userId);
    }
    for (const publisher of payload.publishers) addPublisher(publisher, token);
  } else if (name === "joined") {
    addPublisher(payload, token);
  } else if (name === "left") {
    removePublisher(payload.userId);
  }
}

// --- one WHEP session per publisher ------------------------------------------------

function addPublisher({ userId, tracks }, token) {
  if (state.publishers.has(userId)) return;
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.dataset.userId = userId;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.controls = true;
  const caption = document.createElement("figcaption");
  caption.textContent = userId;
  tile.append(video, caption);
  $("videos").append(tile);

  const item = document.createElement("li");
  item.dataset.userId = userId;
  item.textContent = `${userId} (${tracks.join(" + ")})`;
  $("participants").append(item);

  const publisher = { userId, tracks, video, tile, item, pc: null, sessionUrl: null };
  state.publishers.set(userId, publisher);
  updateCount();
  watch(publisher, token).catch((error) => {
    caption.textContent = `${userId}: ${error.message}`;
    caption.classList.add("error");
  });
}

async function watch(publisher, token) {
  const url = `/whep/${[appId, roomId, publisher.userId].map(encodeURIComponent).join("/")}`;
  const pc = new RTCPeerConnection({ iceServers: await iceServers(url, token) });
  publisher.pc = pc;
  const stream = new MediaStream();
  publisher.video.srcObject = stream;
  for (const kind of publisher.tracks) pc.addTransceiver(kind, { direction: "recvonly" });
  pc.ontrack = (event) => {
    stream.addTrack(event.track);
    play(publisher.video);
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    throw new Error(`WHEP answered ${response.status}: ${(await response.text()).trim()}`);
  }
  publisher.sessionUrl = new URL(response.headers.get("Location"), location.href).href;
  if (!state.publishers.has(publisher.userId)) {
    leave(publisher); // left while we were connecting
    return;
  }
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}

// The STUN/TURN servers the operator configured, from the WHEP endpoint's Link headers
// (RFC 9725): needed before the offer, since its candidates are gathered up front. The
// token goes along (same origin: no CORS preflight), as TURN credentials are handed
// only to a viewer whose token passes.
async function iceServers(url, token) {
  let header = null;
  try {
    const options = { method: "OPTIONS", headers: { Authorization: `Bearer ${token}` } };
    header = (await fetch(url, options)).headers.get("Link");
  } catch {
    return [];
  }
  const servers = [];
  for (const [, target, params] of (header || "").matchAll(/<([^>]*)>([^<]*)/g)) {
    const values = Object.fromEntries(
      [...params.matchAll(/;\s*([\w-]+)="((?:[^"\\]|\\.)*)"/g)].map(([, key, value]) => [
        key,
        value.replace(/\\(.)/g, "$1"),
      ]),
    );
    if (values.rel !== "ice-server") continue;
    const server = { urls: target };
    if (values.username !== undefined) server.username = values.username;
    if (values.credential !== undefined) server.credential = values.credential;
    servers.push(server);
  }
  return servers;
}

// The server takes no trickled candidates: the offer carries them all.
function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHERING_MS);
  });
}

// With sound if the browser allows it; otherwise muted, with a button to unmute.
async function play(video) {
  try {
    await video.play();
  } catch (error) {
    if (error.name !== "NotAllowedError") return;
    video.muted = true;
    await video.play().catch(() => {});
    const tile = video.parentElement;
    if (tile && !tile.querySelector("button")) {
      const unmute = document.createElement("button");
      unmute.textContent = "Unmute";
      unmute.onclick = () => {
        video.muted = false;
        unmute.remove();
      };
      tile.append(unmute);
    }
  }
}

function removePublisher(userId) {
  const publisher = state.publishers.get(userId);
  if (!publisher) return;
  state.publishers.delete(userId);
  publisher.tile.remove();
  publisher.item.remove();
  updateCount();
  leave(publisher);
}

function leave(publisher) {
  if (publisher.pc) publisher.pc.close();
  if (publisher.sessionUrl) fetch(publisher.sessionUrl, { method: "DELETE" }).catch(() => {});
}

function closeAll() {
  for (const userId of [...state.publishers.keys()]) removePublisher(userId);
}

function updateCount() {
  $("count").textContent = String(state.publishers.size);
  $("empty").hidden = state.publishers.size > 0;
}

// --- start -------------------------------------------------------------------------

function start(token) {
  $("sign-in").hidden = true;
  $("room").hidden = false;
  followRoom(token);
}

$("room-name").textContent = `${roomId} · ${appId}`;
document.title = `${roomId} · relaystream`;
$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  history.replaceState(null, "", `#token=${encodeURIComponent(token)}`);
  start(token);
});
window.addEventListener("pagehide", closeAll);

const initialToken = tokenFromFragment();
if (initialToken) start(initialToken);
else askForToken("");
