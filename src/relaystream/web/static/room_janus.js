// The room page for a room hosted on Janus. Janus makes the offer to its subscribers, so
// the page talks to Janus itself, with the room's pin (which the server hands out only
// for a checked subscribe token): it joins the VideoRoom as a participant that never
// publishes, which is how Janus tells who publishes and when they come and go, and
// watches each publisher with a subscriber handle of its own (Janus offers, the page
// answers). The media flows between the browser and Janus.

import { JanusSession } from "/static/janus_api.js";
import { iceGathered, showTracks } from "/static/player.js";

const VIDEOROOM = "janus.plugin.videoroom";

// Shows the room's publishers through `room` (addPublisher, removePublisher, removeAll,
// connected) until the Janus session or the room ends; returns the reason. `iceServers()`
// fetches the STUN/TURN servers for each subscription.
export async function followJanusRoom(access, room, iceServers) {
  const session = await JanusSession.open(access.url);
  const feeds = new Map(); // Janus feed id -> UserId
  const gone = new Set(); // feeds that left, in case the join's answer comes later
  let roomEnded;
  const ended = new Promise((resolve) => {
    roomEnded = resolve;
  });
  const join = { room: access.room, pin: access.pin };

  const publish = (publishers) => {
    for (const publisher of publishers || []) {
      if (gone.has(publisher.id) || feeds.has(publisher.id)) continue;
      const userId = publisher.display || String(publisher.id);
      // A relay that rejoined Janus is a new feed under the same UserId: the new one wins.
      for (const [feed, shown] of feeds) {
        if (shown === userId) unpublish(feed);
      }
      const kinds = (publisher.streams || []).filter((s) => !s.disabled).map((s) => s.type);
      feeds.set(publisher.id, userId);
      room.addPublisher({ userId, tracks: [...new Set(kinds)].sort() }, (tile) =>
        watch(session, join, publisher.id, tile, iceServers),
      );
    }
  };
  const unpublish = (feed) => {
    gone.add(feed);
    const userId = feeds.get(feed);
    feeds.delete(feed);
    if (userId !== undefined) room.removePublisher(userId);
  };

  try {
    const handle = await session.attach(VIDEOROOM);
    handle.onevent = (event) => {
      const data = event.plugindata?.data || {};
      if (data.videoroom === "destroyed") roomEnded("the room was closed");
      publish(data.publishers);
      for (const feed of [data.unpublished, data.leaving]) {
        if (typeof feed === "number") unpublish(feed);
      }
    };
    const { data } = await handle.request({ request: "join", ptype: "publisher", ...join });
    publish(data.publishers);
    room.connected();
    return await Promise.race([session.lost, ended]);
  } finally {
    room.removeAll();
    session.close();
  }
}

// Plays one feed in its tile (the room page's publisher: video, pc, onLeave).
async function watch(session, join, feed, tile, iceServers) {
  const handle = await session.attach(VIDEOROOM);
  tile.onLeave(() => handle.detach());
  const joined = { request: "join", ptype: "subscriber", ...join, streams: [{ feed }] };
  const { jsep: offer } = await handle.request(joined);
  if (!offer) throw new Error("Janus sent no offer");
  const pc = new RTCPeerConnection({ iceServers: await iceServers() });
  tile.pc = pc;
  tile.onLeave(() => pc.close());
  showTracks(pc, tile.video);
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await iceGathered(pc);
  const answer = { type: "answer", sdp: pc.localDescription.sdp };
  await handle.request({ request: "start", room: join.room }, answer);
  await handle.endOfCandidates();
}
