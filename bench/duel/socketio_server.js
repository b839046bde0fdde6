// The duel's Socket.IO 4 peer: one Node process, the Redis Streams adapter, WebSocket only.
// A client joins the room named by its handshake query `stream`; the duel's publisher writes
// BROADCAST messages into the adapter's Redis stream ("socket.io") directly, as another server
// of the cluster would, so every entry reaches this process through Redis (XREAD), like the
// other two servers. Connection state recovery is on: a client that comes back within 60 s
// with its pid and last offset gets what it missed (the resume workload).
// Usage: node socketio_server.js PORT REDIS_URL
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-streams-adapter");

const [port, redisUrl] = process.argv.slice(2);

(async () => {
  const redisClient = createClient({ url: redisUrl });
  await redisClient.connect();
  const httpServer = createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(redisClient),
    transports: ["websocket"],
    serveClient: false,
    connectionStateRecovery: { maxDisconnectionDuration: 60000, skipMiddlewares: true },
  });
  io.on("connection", (socket) => {
    if (!socket.recovered) socket.join(String(socket.handshake.query.stream));
  });
  httpServer.listen(Number(port), "127.0.0.1", 4096, () => console.log(`listening on ${port}`));
  const stop = () => { io.close(); redisClient.quit().finally(() => process.exit(0)); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
})();
