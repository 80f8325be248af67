// The console: run relays of one AppId with an access key held only in this tab.
// Every call is a signed OpenAPI request (volcengine.js); there is no server session,
// so there is no cookie for a cross-site request to ride on.

import { ApiError, Privilege, callAction, generateToken } from "/static/volcengine.js";

const REFRESH_MS = 2000;
const KEYS = "relaystream.console.keys";
const STATUS_NAMES = { 1: "starting", 2: "running", 3: "ended" };
// Refusals that mean the keys themselves are wrong, not the request.
const SIGN_IN_ERRORS = new Set([
  "InvalidAccessKey", "SignatureDoesNotMatch", "InvalidTimestamp",
  "AccessDenied.NoPermissionForApp", "InvalidParameter.NotExistAppId",
]);

const $ = (id) => document.getElementById(id);
let keys = null;
let settings = { region: "cn-north-1", demoStreamUrl: "" };
let listSupported = true;
let refreshTimer = null;
const rows = new Map(); // "room/task" -> <tr>
const roomLinks = new Map(); // RoomId -> room page URL (with a subscribe token)

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").classList.toggle("error", isError);
}

// Tasks started here, for a server without ListRelayStream.
function rememberedTasks() {
  return JSON.parse(localStorage.getItem(`relaystream.tasks.${keys.appId}`) || "[]");
}

function remember(roomId, taskId) {
  const tasks = rememberedTasks().filter(([r, t]) => r !== roomId || t !== taskId);
  tasks.unshift([roomId, taskId]);
  localStorage.setItem(`relaystream.tasks.${keys.appId}`, JSON.stringify(tasks.slice(0, 100)));
}

// --- signing in ----------------------------------------------------------------------

async function signIn(candidate) {
  try {
    await callAction(candidate, "GetRelayStream",
      { AppId: candidate.appId, RoomId: "console", TaskId: "sign-in-check" });
  } catch (error) {
    if (!(error instanceof ApiError) || SIGN_IN_ERRORS.has(error.code)) throw error;
  }
  keys = candidate;
  sessionStorage.setItem(KEYS, JSON.stringify(keys));
  $("sign-in").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${keys.accessKeyId} · AppId ${keys.appId} · ${keys.region}`;
  await refresh();
}

function signOut() {
  keys = null;
  sessionStorage.removeItem(KEYS);
  clearTimeout(refreshTimer);
  rows.clear();
  roomLinks.clear();
  $("tasks").replaceChildren();
  $("console").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
}

// --- the task list -------------------------------------------------------------------

async function fetchTasks() {
  if (listSupported) {
    try {
      const result = await callAction(keys, "ListRelayStream", { AppId: keys.appId, Limit: 100 });
      $("task-source").textContent = `(${result.Total} in AppId)`;
      return result.Tasks;
    } catch (error) {
      if (!(error instanceof ApiError) || error.code !== "InvalidActionOrVersion") throw error;
      listSupported = false;
    }
  }
  $("task-source").textContent = "(started from this browser)";
  const tasks = await Promise.all(rememberedTasks().map(([RoomId, TaskId]) =>
    callAction(keys, "GetRelayStream", { AppId: keys.appId, RoomId, TaskId })
      .then((result) => result.Task, () => null)));
  return tasks.filter(Boolean);
}

async function refresh() {
  clearTimeout(refreshTimer);
  if (!keys) return;
  try {
    const tasks = await fetchTasks();
    const seen = new Set();
    for (const task of tasks) {
      const key = `${task.RoomId}/${task.TaskId}`;
      seen.add(key);
      // Stats live in GetRelayStream; List gives the rest.
      const full = task.Stats || task.Status !== 2 ? task : await getTask(task);
      showTask(key, full);
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.remove();
        rows.delete(key);
      }
    }
    $("no-tasks").hidden = rows.size > 0;
  } catch (error) {
    say(`Could not list the tasks: ${error.message}`, true);
  }
  if (keys) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

async function getTask(task) {
  try {
    const result = await callAction(keys, "GetRelayStream",
      { AppId: keys.appId, RoomId: task.RoomId, TaskId: task.TaskId });
    return result.Task;
  } catch {
    return task;
  }
}

function cell(row, index) {
  while (row.cells.length <= index) row.insertCell();
  return row.cells[index];
}

function showTask(key, task) {
  let row = rows.get(key);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.task = key;
    $("tasks").append(row);
    rows.set(key, row);
    const actions = cell(row, 6);
    actions.className = "actions";
    const room = document.createElement("a");
    room.textContent = "Room";
    room.target = "_blank";
    room.rel = "noopener";
    room.className = "room-link";
    const update = document.createElement("button");
    update.type = "button";
    update.textContent = "Update";
    update.className = "update";
    update.onclick = () => openUpdate(task.RoomId, task.TaskId);
    const stop = document.createElement("button");
    stop.type = "button";
    stop.textContent = "Stop";
    stop.className = "stop";
    stop.onclick = () => stopTask(task.RoomId, task.TaskId);
    actions.append(room, " ", update, " ", stop);
    roomLink(task.RoomId).then((url) => { room.href = url; });
  }
  cell(row, 0).textContent = task.RoomId;
  cell(row, 1).textContent = task.TaskId;
  cell(row, 2).textContent = task.UserId;
  const status = cell(row, 3);
  status.className = `status status-${task.Status}`;
  status.textContent = `${task.Status} ${STATUS_NAMES[task.Status] || ""}` +
    (task.StopReason ? ` · ${task.StopReason}` : "");
  cell(row, 4).textContent = task.StreamUrl;
  cell(row, 5).textContent = describeStats(task.Stats);
  const ended = task.Status === 3;
  row.querySelector("button.stop").disabled = ended;
  row.querySelector("button.update").disabled = ended;
}

function describeStats(stats) {
  if (!stats) return "";
  const parts = [`${stats.OutputFrameRate} fps`, `${stats.OutputBitrateKbps} kbps`,
    `${stats.VideoFramesSent} video / ${stats.AudioFramesSent} audio frames`];
  if (stats.ReconnectCount) parts.push(`${stats.ReconnectCount} reconnects`);
  if (stats.LastError) parts.push(`last error: ${stats.LastError}`);
  return parts.join(" · ");
}

// The room page of RoomId, signed in with a subscribe token made here with the AppKey.
async function roomLink(roomId) {
  if (!roomLinks.has(roomId)) {
    const viewer = `console-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
    const token = await generateToken(keys, roomId, viewer, [Privilege.SubscribeStream]);
    const path = `/rooms/${encodeURIComponent(keys.appId)}/${encodeURIComponent(roomId)}`;
    roomLinks.set(roomId, `${path}#token=${encodeURIComponent(token)}`);
  }
  return roomLinks.get(roomId);
}

// --- actions ---------------------------------------------------------------------------

function controlFrom(form, { keepEmpty }) {
  const control = {};
  for (const name of ["StreamUrl", "StreamMode", "MediaType", "VideoWidth", "VideoHeight",
    "FrameRate", "Bitrate"]) {
    const field = form.elements[name];
    if (!field || field.value === "") continue;
    control[name] = name === "StreamUrl" ? field.value : Number(field.value);
  }
  if (!keepEmpty && form.elements.Loop) control.Loop = form.elements.Loop.checked;
  return control;
}

async function startTask({ RoomId, TaskId, UserId, Control }) {
  const Token = await generateToken(keys, RoomId, UserId, [Privilege.PublishStream]);
  const result = await callAction(keys, "StartRelayStream",
    { AppId: keys.appId, RoomId, TaskId, UserId, Token, Control });
  remember(RoomId, TaskId);
  say(result === "ok" ? `Started ${RoomId}/${TaskId}.` : String(result));
  await refresh();
}

async function stopTask(RoomId, TaskId) {
  try {
    await callAction(keys, "StopRelayStream", { AppId: keys.appId, RoomId, TaskId });
    say(`Stopped ${RoomId}/${TaskId}.`);
  } catch (error) {
    say(`Could not stop ${RoomId}/${TaskId}: ${error.message}`, true);
  }
  await refresh();
}

let updating = null;

function openUpdate(RoomId, TaskId) {
  updating = { RoomId, TaskId };
  $("update-key").textContent = `${RoomId}/${TaskId}`;
  $("update").reset();
  $("update").hidden = false;
}

async function submitUpdate() {
  const { RoomId, TaskId } = updating;
  const Control = controlFrom($("update"), { keepEmpty: true });
  await callAction(keys, "UpdateRelayStream", { AppId: keys.appId, RoomId, TaskId, Control });
  say(`Updated ${RoomId}/${TaskId}.`);
  $("update").hidden = true;
  await refresh();
}

function reportFailure(what) {
  return (error) => say(`${what}: ${error.message}`, true);
}

// --- wiring ----------------------------------------------------------------------------

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  const candidate = {
    accessKeyId: $("access-key-id").value.trim(),
    secretAccessKey: $("secret-access-key").value,
    appId: $("app-id").value.trim(),
    appKey: $("app-key").value,
    region: $("region").value.trim(),
  };
  $("sign-in-error").textContent = "";
  signIn(candidate).catch((error) => {
    $("sign-in-error").textContent = `Sign-in refused: ${error.message}`;
  });
});
$("sign-out").addEventListener("click", signOut);

$("start").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  startTask({
    RoomId: form.elements.RoomId.value.trim(),
    TaskId: form.elements.TaskId.value.trim(),
    UserId: form.elements.UserId.value.trim(),
    Control: controlFrom(form, { keepEmpty: false }),
  }).catch(reportFailure("Could not start"));
});

$("start-test").addEventListener("click", () => {
  const taskId = `testsrc-${Date.now().toString(36)}`;
  startTask({
    RoomId: $("test-room").textContent,
    TaskId: taskId,
    UserId: taskId,
    Control: { StreamUrl: settings.demoStreamUrl, StreamMode: 1, Loop: true },
  }).catch(reportFailure("Could not start the test stream"));
});

$("update").addEventListener("submit", (event) => {
  event.preventDefault();
  submitUpdate().catch(reportFailure("Could not update"));
});
$("update-cancel").addEventListener("click", () => { $("update").hidden = true; });

async function main() {
  try {
    settings = await (await fetch("/console/settings.json")).json();
  } catch {
    // keep the defaults
  }
  $("region").value = settings.region;
  $("start").elements.StreamUrl.placeholder = settings.demoStreamUrl;
  const saved = sessionStorage.getItem(KEYS);
  if (saved) {
    signIn(JSON.parse(saved)).catch(() => signOut());
  } else {
    $("sign-in").hidden = false;
  }
}

main();
