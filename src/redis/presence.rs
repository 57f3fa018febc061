//! The cluster's keys (docs/operations.md, "Several relays"):
//!
//! - `presence:<device id>` → the node holding the device's socket, expiring unless that node's
//!   heartbeat renews it;
//! - `node:<node id>` → the node's JSON summary (its devices, when it last beat), expiring alike;
//! - `nodes` → sorted set of node ids by last heartbeat (epoch ms); members older than the TTL
//!   are pruned by every heartbeat, and the set expires if no node beats at all.
//!
//! Wake-ups go to the node's own channel, `node:<node id>` (a channel, not a key).

use std::sync::LazyLock;

use super::{Redis, RedisError};

/// The channel a node is woken on (under the prefix).
pub fn node_channel(node: &str) -> String {
    format!("node:{node}")
}

fn presence_key(device: &str) -> String {
    format!("presence:{device}")
}

const NODES_KEY: &str = "nodes";

fn node_key(node: &str) -> String {
    format!("node:{node}")
}

/// Most keys per MGET or heartbeat script call.
const CHUNK: usize = 1_000;

/// Deletes a device's presence if this node still holds it (a device that moved to another node
/// keeps that node's entry). KEYS: presence. ARGV: node.
const WITHDRAW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Renews a node and its devices. KEYS: nodes, node, presence keys…. ARGV: node, now ms, TTL ms,
/// summary.
const HEARTBEAT: &str = r"
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], ARGV[4], 'PX', ttl)
for i = 3, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl) end
return 1
";

/// Renews more presence keys (a node with more devices than one script call takes). KEYS:
/// presence keys…. ARGV: node, TTL ms.
const RENEW: &str = r"
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return 1
";

/// The live nodes and their summaries, `[id, summary, …]`. KEYS: nodes. ARGV: oldest heartbeat
/// ms still live, node key prefix.
const NODES: &str = r"
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local summary = redis.call('GET', ARGV[2] .. id)
  if summary then table.insert(out, id) table.insert(out, summary) end
end
return out
";

static WITHDRAW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(WITHDRAW));
static HEARTBEAT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HEARTBEAT));
static RENEW_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW));
static NODES_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(NODES));

impl Redis {
    /// Records that `node` holds `device`, for `ttl_ms` unless renewed.
    pub async fn announce(&self, device: &str, node: &str, ttl_ms: u64) -> Result<(), RedisError> {
        self.set_px(&presence_key(device), node.as_bytes(), ttl_ms)
            .await
    }

    /// Forgets that `node` holds `device` (unless another node took it since).
    pub async fn withdraw(&self, device: &str, node: &str) -> Result<(), RedisError> {
        self.eval::<i64>(
            &WITHDRAW_SCRIPT,
            &[&presence_key(device)],
            &[node.as_bytes()],
        )
        .await
        .map(|_| ())
    }

    /// Renews `node`, its `summary` and the presence of its `devices` for `ttl_ms`; prunes nodes
    /// whose last heartbeat is older than that.
    pub async fn heartbeat(
        &self,
        node: &str,
        devices: &[String],
        summary: &[u8],
        now_ms: i64,
        ttl_ms: u64,
    ) -> Result<(), RedisError> {
        let ttl = ttl_ms.max(1).to_string();
        let mut chunks = devices.chunks(CHUNK);
        let first: Vec<String> = chunks
            .next()
            .unwrap_or_default()
            .iter()
            .map(|d| presence_key(d))
            .collect();
        let mut keys = vec![NODES_KEY.to_owned(), node_key(node)];
        keys.extend(first);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.eval::<i64>(
            &HEARTBEAT_SCRIPT,
            &keys,
            &[
                node.as_bytes(),
                now_ms.to_string().as_bytes(),
                ttl.as_bytes(),
                summary,
            ],
        )
        .await?;
        for chunk in chunks {
            let keys: Vec<String> = chunk.iter().map(|d| presence_key(d)).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.eval::<i64>(&RENEW_SCRIPT, &keys, &[node.as_bytes(), ttl.as_bytes()])
                .await?;
        }
        Ok(())
    }

    /// Which node holds each of `devices` (`None`: none that is alive), in order.
    pub async fn holders(&self, devices: &[&str]) -> Result<Vec<Option<String>>, RedisError> {
        let mut out = Vec::with_capacity(devices.len());
        for chunk in devices.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|d| self.key(&presence_key(d))).collect();
            let mut conn = self.conn().await?;
            let found: Vec<Option<String>> = self
                .deadline(redis::cmd("MGET").arg(&keys).query_async(&mut *conn))
                .await?;
            out.extend(found);
        }
        Ok(out)
    }

    /// The nodes whose last heartbeat is within `ttl_ms` of `now_ms`, with their summaries.
    pub async fn nodes(
        &self,
        now_ms: i64,
        ttl_ms: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, RedisError> {
        let oldest = now_ms.saturating_sub(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let prefix = self.key("node:");
        let flat: Vec<Vec<u8>> = self
            .eval(
                &NODES_SCRIPT,
                &[NODES_KEY],
                &[oldest.to_string().as_bytes(), prefix.as_bytes()],
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(id), Some(summary)) = (items.next(), items.next()) {
            out.push((String::from_utf8_lossy(&id).into_owned(), summary));
        }
        Ok(out)
    }
}
