// /ride/'s outbox: every sample waits here, in order, until the server acknowledged the frame
// that carried it. Kept in IndexedDB (one record per sample, keyed by arrival, tagged with its
// stream) so that a dropped connection or a reload loses nothing; an in-memory copy serves
// reads. Bounded: past ``limit`` samples the oldest go. Without IndexedDB (a private window
// that refuses it) it is memory only.
window.RideQueue = (() => {
  const DB_NAME = "streamsite-ride", STORE = "samples";

  const request = (req) => new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });

  const openDb = () => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { autoIncrement: true }).createIndex("stream", "stream");
    return request(req);
  };

  const store = (db, mode) => db.transaction(STORE, mode).objectStore(STORE);

  // The samples a previous visit left for ``stream``, oldest first: [{key, entry}].
  const leftovers = async (db, stream) => {
    const index = store(db, "readonly").index("stream");
    const [keys, values] = await Promise.all([request(index.getAllKeys(stream)), request(index.getAll(stream))]);
    return keys.map((key, i) => ({ key, entry: values[i].entry })).sort((a, b) => a.key - b.key);
  };

  class Queue {
    constructor(db, stream, limit, items) {
      this.db = db; this.stream = stream; this.limit = limit; this.items = items;
      this.dropped = 0;  // the oldest samples let go over the limit
      this.nextKey = -1;  // memory-only keys, when there is no database
    }

    static async open(stream, limit) {
      try {
        const db = await openDb();
        return new Queue(db, stream, limit, await leftovers(db, stream));
      } catch (err) {
        console.warn("IndexedDB unavailable, the outbox is in memory only:", err);
        return new Queue(null, stream, limit, []);
      }
    }

    get size() { return this.items.length; }

    async add(entry) {
      const key = this.db ? await request(store(this.db, "readwrite").add({ stream: this.stream, entry })) : this.nextKey--;
      const item = { key, entry };
      this.items.push(item);
      const over = this.items.length - this.limit;
      if (over > 0) {
        this.dropped += over;
        this._forget(this.items.splice(0, over));
      }
      return item;
    }

    head(count) { return this.items.slice(0, count); }

    // Acknowledged (or stored already): out of the queue for good.
    remove(sent) {
      const keys = new Set(sent.map((item) => item.key));
      this.items = this.items.filter((item) => !keys.has(item.key));
      this._forget(sent);
    }

    // Drops the queued samples whose time is not after ``t`` (the stream has them); their count.
    dropUpTo(t) {
      const stored = this.items.filter((item) => item.entry.t <= t);
      this.remove(stored);
      return stored.length;
    }

    _forget(items) {
      if (!this.db || !items.length) return;
      const objects = store(this.db, "readwrite");
      for (const item of items) objects.delete(item.key);
    }
  }

  return { open: Queue.open };
})();
