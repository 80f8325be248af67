// The room page: everyone publishing in /rooms/{AppId}/{RoomId}, one <video> each.
// The token comes from the URL fragment (#token=...) or the form, and is sent only in
// Authorization headers: to the room's access gate, the participant stream and each WHEP
// offer. The gate says where the room's media is: on this server (followed with the
// participant stream, played with WHEP), or in a Janus VideoRoom that the page joins
// itself with the pin the gate hands out (room_janus.js).

import { JanusError } from "/static/janus_api.js";
import { iceGathered, iceServers, showTracks } from "/static/player.js";
import { followJanusRoom } from "/static/room_janus.js";

const [, , appId, roomId] = location.pathname.split("/").map(decodeURIComponent);
const roomPath = `/rooms/${encodeURIComponent(appId)}/${encodeURIComponent(roomId)}`;
const RETRY_MS = 2000;
const JANUS_NO_SUCH_ROOM = 426;

// Tests and curious users can look at the live peers here.
const state = { publishers: new Map(), connected: false };
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

async function throwIfRefused(response) {
  if (response.status === 401 || response.status === 403) {
    throw new Refused(`The token was refused: ${(await response.text()).trim()}`);
  }
}

function connected() {
  state.connected = true;
  showStatus("Live");
}

// --- following the room, wherever it is ---------------------------------------------

async function followRoom(token) {
  for (;;) {
    try {
      const access = await roomAccess(token);
      if (access.roomServer === "janus") {
        // Any publisher's WHEP URL answers with the room's STUN/TURN servers.
        const servers = () => iceServers(whepUrl("ice-servers"), token);
        const reason = await followJanusRoom(access.janus, janusRoomView, servers);
        showStatus(`Reconnecting: ${reason}`, true);
      } else {
        await readEvents(token);
        showStatus("Reconnecting…");
      }
    } catch (error) {
      if (error instanceof Refused) {
        closeAll();
        showStatus("Signed out", true);
        askForToken(error.message);
        return;
      }
      if (error instanceof JanusError && error.code === JANUS_NO_SUCH_ROOM) {
        showStatus("Nobody has published in this room yet");
      } else {
        showStatus(`Reconnecting: ${error.message}`, true);
      }
    }
    state.connected = false;
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

// Asked again on every reconnection, so a token that has expired since stops working.
async function roomAccess(token) {
  const response = await fetch(`${roomPath}/access`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  await throwIfRefused(response);
  if (!response.ok) throw new Error(`the room's access answered ${response.status}`);
  return response.json();
}

const janusRoomView = { addPublisher, removePublisher, removeAll: closeAll, connected };

// --- an embedded room's participants, over server-sent events read with fetch -------

async function readEvents(token) {
  const response = await fetch(`${roomPath}/events`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  await throwIfRefused(response);
  if (!response.ok) throw new Error(`events answered ${response.status}`);
  connected();
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
  const whep = (publisher) => watchWithWhep(publisher, token);
  if (name === "snapshot") {
    const present = new Set(payload.publishers.map((p) => p.userId));
    for (const userId of [...state.publishers.keys()]) {
      if (!present.has(userId)) removePublisher(userId);
    }
    for (const publisher of payload.publishers) addPublisher(publisher, whep);
  } else if (name === "joined") {
    addPublisher(payload, whep);
  } else if (name === "left") {
    removePublisher(payload.userId);
  }
}

// --- one tile per publisher, whatever plays it -------------------------------------

// `watcher(publisher)` plays the publisher in its tile; what it opens it hands to
// publisher.onLeave, which runs it when the publisher leaves (at once if it has left).
function addPublisher({ userId, tracks }, watcher) {
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

  const closers = [];
  const publisher = {
    userId,
    tracks,
    video,
    tile,
    item,
    pc: null,
    left: false,
    onLeave(close) {
      if (publisher.left) close();
      else closers.push(close);
    },
    leave() {
      publisher.left = true;
      for (const close of closers.splice(0)) close();
    },
  };
  state.publishers.set(userId, publisher);
  updateCount();
  watcher(publisher).catch((error) => {
    caption.textContent = `${userId}: ${error.message}`;
    caption.classList.add("error");
  });
}

// --- an embedded room: one WHEP session per publisher -------------------------------

function whepUrl(userId) {
  return `/whep/${[appId, roomId, userId].map(encodeURIComponent).join("/")}`;
}

async function watchWithWhep(publisher, token) {
  const url = whepUrl(publisher.userId);
  const pc = new RTCPeerConnection({ iceServers: await iceServers(url, token) });
  publisher.pc = pc;
  publisher.onLeave(() => pc.close());
  showTracks(pc, publisher.video);
  for (const kind of publisher.tracks) pc.addTransceiver(kind, { direction: "recvonly" });
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
  const sessionUrl = new URL(response.headers.get("Location"), location.href).href;
  publisher.onLeave(() => fetch(sessionUrl, { method: "DELETE" }).catch(() => {}));
  if (publisher.left) return; // left while we were connecting
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}

function removePublisher(userId) {
  const publisher = state.publishers.get(userId);
  if (!publisher) return;
  state.publishers.delete(userId);
  publisher.tile.remove();
  publisher.item.remove();
  updateCount();
  publisher.leave();
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
