// What every player of the room page shares, wherever the room's media comes from: the
// operator's STUN/TURN servers, a complete ICE gathering, and a <video> that plays.

const ICE_GATHERING_MS = 2000;

// The STUN/TURN servers the operator configured, from the WHEP endpoint's Link headers
// (RFC 9725): needed before the offer or answer, since its candidates are gathered up
// front. The token goes along (same origin: no CORS preflight), as TURN credentials are
// handed only to a viewer whose token passes.
export async function iceServers(url, token) {
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

// Neither this server nor (as the page uses it) Janus takes trickled candidates: the SDP
// carries them all.
export function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHERING_MS);
  });
}

// The tracks `pc` receives, played by `video`.
export function showTracks(pc, video) {
  const stream = new MediaStream();
  video.srcObject = stream;
  pc.ontrack = (event) => {
    stream.addTrack(event.track);
    play(video);
  };
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
