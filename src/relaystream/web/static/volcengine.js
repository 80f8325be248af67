// Volcengine OpenAPI signature V4 and RTC AccessToken "001", in the browser (WebCrypto).
// The same bytes as the official SDK (volcengine/auth/SignerV4.py) and as
// relaystream/api/signature.py and relaystream/rtc/token.py: the server verifies these.

const encoder = new TextEncoder();
const SERVICE = "rtc";
const ALGORITHM = "HMAC-SHA256";
const API_VERSION = "2023-11-01";

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256Hex(text) {
  return hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

async function hmac(key, text) {
  const raw = typeof key === "string" ? encoder.encode(key) : key;
  const cryptoKey = await crypto.subtle.importKey(
    "raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKey, encoder.encode(text)));
}

// RFC 3986 quoting with "-_.~" unreserved, as Python's quote(safe="-_.~").
function quote(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

// The SDK drops :80 and :443 from the signed Host.
function signedHost(host) {
  const parts = host.split(":");
  return parts.length > 1 && (parts[1] === "80" || parts[1] === "443") ? parts[0] : host;
}

export class ApiError extends Error {
  constructor(code, message, status) {
    super(`${code}: ${message}`);
    this.code = code;
    this.status = status;
  }
}

// Calls one action on this server, signed with the access key; returns its Result.
export async function callAction({ accessKeyId, secretAccessKey, region }, action, body) {
  const query = { Action: action, Version: API_VERSION };
  const canonicalQuery = Object.keys(query).sort()
    .map((key) => `${quote(key)}=${quote(query[key])}`).join("&");
  const payload = JSON.stringify(body);
  const xDate = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  const scopeDate = xDate.slice(0, 8);
  const bodySha256 = await sha256Hex(payload);
  const headers = {
    "content-type": "application/json",
    host: signedHost(location.host),
    "x-content-sha256": bodySha256,
    "x-date": xDate,
  };
  const names = Object.keys(headers).sort();
  const canonical = [
    "POST",
    "/",
    canonicalQuery,
    names.map((name) => `${name}:${headers[name]}\n`).join(""),
    names.join(";"),
    bodySha256,
  ].join("\n");
  const scope = `${scopeDate}/${region}/${SERVICE}/request`;
  const stringToSign = [ALGORITHM, xDate, scope, await sha256Hex(canonical)].join("\n");
  let key = encoder.encode(secretAccessKey);
  for (const part of [scopeDate, region, SERVICE, "request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, stringToSign));

  const response = await fetch(`/?${canonicalQuery}`, {
    method: "POST",
    headers: {
      "Content-Type": headers["content-type"],
      "X-Date": xDate,
      "X-Content-Sha256": bodySha256,
      Authorization: `${ALGORITHM} Credential=${accessKeyId}/${scope}, ` +
        `SignedHeaders=${names.join(";")}, Signature=${signature}`,
    },
    body: payload,
  });
  const envelope = await response.json();
  const error = envelope.ResponseMetadata && envelope.ResponseMetadata.Error;
  if (error) throw new ApiError(error.Code, error.Message, response.status);
  return envelope.Result;
}

export const Privilege = {
  PublishStream: 0, PublishAudio: 1, PublishVideo: 2, PublishData: 3, SubscribeStream: 4,
};

// An RTC AccessToken (version "001") signed with the AppKey; privileges never expire.
export async function generateToken({ appId, appKey }, roomId, userId, privileges) {
  const granted = new Set(privileges);
  if (granted.has(Privilege.PublishStream)) {
    // What Volcengine's own generators do: PublishStream grants the other publishes.
    for (const p of [Privilege.PublishAudio, Privilege.PublishVideo, Privilege.PublishData]) {
      granted.add(p);
    }
  }
  const bytes = [];
  const u16 = (n) => bytes.push(n & 0xff, (n >> 8) & 0xff);
  const u32 = (n) => bytes.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  const str = (text) => {
    const raw = encoder.encode(text);
    u16(raw.length);
    bytes.push(...raw);
  };
  u32(crypto.getRandomValues(new Uint32Array(1))[0]);
  u32(Math.floor(Date.now() / 1000));
  u32(0);
  str(roomId);
  str(userId);
  const sorted = [...granted].sort((a, b) => a - b);
  u16(sorted.length);
  for (const privilege of sorted) {
    u16(privilege);
    u32(0);
  }
  const msg = new Uint8Array(bytes);
  const key = await crypto.subtle.importKey(
    "raw", encoder.encode(appKey), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, msg));
  const content = new Uint8Array(2 + msg.length + 2 + sig.length);
  content.set([msg.length & 0xff, msg.length >> 8], 0);
  content.set(msg, 2);
  content.set([sig.length & 0xff, sig.length >> 8], 2 + msg.length);
  content.set(sig, 4 + msg.length);
  return `001${appId}${btoa(String.fromCharCode(...content))}`;
}
