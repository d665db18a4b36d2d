//! Puts with 1,024-entry contexts of mostly fabricated nodes: the stored state stays bounded.

use super::*;

/// The default `limits.max_key_state_bytes`.
const KEY_STATE_LIMIT: usize = 1024 * 1024 + 256 * 1024;

/// Bytes a stored version may take beyond its value (dot, timestamp,
/// flags, expiry, length), an upper bound used to estimate a stored state
/// from `Admin.LocalGet`.
const VERSION_OVERHEAD: usize = 40;

/// Puts with fabricated contexts, and the entries of each context.
const WIDE_PUTS: usize = 150;
const CONTEXT_ENTRIES: usize = 1024;

// ------------------------------------------------------ the context format

/// The client context in format 1 (`server/src/version/codec.rs`):
/// `0x01`, a varint entry count, then per entry the node id (u64 LE) and a
/// varint counter, nodes ascending.
fn encode_context(entries: &BTreeMap<u64, u64>) -> Vec<u8> {
    let mut out = vec![1u8];
    put_varint(&mut out, entries.len() as u64);
    for (node, counter) in entries {
        out.extend_from_slice(&node.to_le_bytes());
        put_varint(&mut out, *counter);
    }
    out
}

/// The entries of a context a node returned, checked by encoding them back
/// to the same bytes (so [`encode_context`] writes what nodes write).
fn decode_context(bytes: &[u8]) -> BTreeMap<u64, u64> {
    assert_eq!(bytes.first(), Some(&1), "context format byte");
    let mut pos = 1;
    let count = read_varint(bytes, &mut pos);
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let node = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
        pos += 8;
        entries.insert(node, read_varint(bytes, &mut pos));
    }
    assert_eq!(pos, bytes.len(), "context has trailing bytes");
    assert_eq!(
        encode_context(&entries),
        bytes,
        "context does not round-trip"
    );
    entries
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// A node id no member has: splitmix64 of `i`, far from real random ids
/// only by chance, which is all a fabricated id needs.
fn fabricated_id(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 150 puts to one key, each with a distinct context of 1,024 entries: the
/// key's real entries and fabricated node ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_of_fabricated_nodes_do_not_grow_the_stored_state() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let cluster =
        TestCluster::start_with_env(3, &[], &[("RINGKV__CLUSTER__PARTITIONS", PARTITIONS)])
            .await
            .unwrap();
    let client = cluster.client();
    let key = "wide";
    client
        .put(key, "v-base", put_with(None, Level::Quorum))
        .await
        .unwrap();
    let members: Vec<u64> = cluster
        .ids
        .iter()
        .map(|id| u64::from_str_radix(id, 16).unwrap())
        .collect();
    let mut problems = Vec::new();
    let mut last_acked = b"v-base".to_vec();
    let (mut acked, mut refused) = (0, 0);
    for i in 0..WIDE_PUTS {
        let read = match client
            .get(key, RequestOptions::level(Level::Quorum), false)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                problems.push(format!("put {i}: the key is unreadable: {e:?}"));
                break;
            }
        };
        // The key's real entries (its writers, all members), then fresh
        // fabricated ids up to the full size: each put names 1,024 nodes,
        // most of which no earlier put named.
        let mut entries: BTreeMap<u64, u64> = decode_context(&read.context.0)
            .into_iter()
            .filter(|(id, _)| members.contains(id))
            .collect();
        let mut n = 0u64;
        while entries.len() < CONTEXT_ENTRIES {
            let id = fabricated_id((i * CONTEXT_ENTRIES) as u64 + n);
            n += 1;
            entries.entry(id).or_insert(1 + (n % 1000));
        }
        let context = Context(encode_context(&entries).into());
        let value = format!("v-{i}").into_bytes();
        match client
            .put(key, value.clone(), put_with(Some(context), Level::Quorum))
            .await
        {
            Ok(_) => {
                acked += 1;
                last_acked = value;
            }
            Err(e) if is_documented_refusal(&e) => refused += 1,
            Err(Error::InvalidArgument(msg)) if msg.contains("context") => refused += 1,
            Err(e) => problems.push(format!("put {i}: failed other than as documented: {e:?}")),
        }
    }
    println!(
        "[{:>5.1?}] {acked} puts acknowledged, {refused} refused as documented",
        started.elapsed()
    );

    // Every replica (N = 3 of 3 nodes): the stored vector names cluster
    // members only, and the state is within the limit.
    for (i, node) in cluster.nodes.iter().enumerate() {
        match node.client().local_get(0, key).await {
            Ok(copy) => {
                let vector = decode_context(&copy.context.0);
                let values: usize = copy
                    .versions
                    .iter()
                    .map(|v| v.value.len() + VERSION_OVERHEAD)
                    .sum();
                let estimate = copy.context.0.len() + values;
                println!(
                    "node {i}: {} vector entries, {} versions, about {estimate} bytes",
                    vector.len(),
                    copy.versions.len()
                );
                let foreign: Vec<u64> = vector
                    .keys()
                    .copied()
                    .filter(|id| !members.contains(id))
                    .collect();
                if !foreign.is_empty() {
                    problems.push(format!(
                        "node {i}: the stored vector has {} entries of nodes that are not members (of {} in all)",
                        foreign.len(),
                        vector.len()
                    ));
                }
                if estimate > KEY_STATE_LIMIT {
                    problems.push(format!(
                        "node {i}: the stored state is about {estimate} bytes, above {KEY_STATE_LIMIT}"
                    ));
                }
                if !copy
                    .versions
                    .iter()
                    .any(|v| v.value.as_ref() == last_acked.as_slice())
                {
                    problems.push(format!(
                        "node {i}: does not hold the last acknowledged put {:?}",
                        String::from_utf8_lossy(&last_acked)
                    ));
                }
            }
            Err(e) => problems.push(format!("node {i}: LocalGet failed: {e}")),
        }
    }
    match client
        .get(key, RequestOptions::level(Level::All), false)
        .await
    {
        Ok(got) => {
            let values: Vec<String> = got
                .siblings
                .iter()
                .map(|s| String::from_utf8_lossy(&s.value).to_string())
                .collect();
            if values != vec![String::from_utf8_lossy(&last_acked).to_string()] {
                problems.push(format!(
                    "the key reads {values:?}, expected only the last acknowledged put"
                ));
            }
            let context = decode_context(&got.context.0);
            if context.len() > cluster.nodes.len() {
                problems.push(format!(
                    "a get returns a context of {} entries for a key written through {} nodes",
                    context.len(),
                    cluster.nodes.len()
                ));
            }
        }
        Err(e) => problems.push(format!("the key is unreadable at ALL: {e:?}")),
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}
