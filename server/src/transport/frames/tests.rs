//! The replica stream's dialling side against fake listeners on loopback:
//! answers out of order, a hang-up with a batch unanswered, a refused
//! hello, a silent peer, nothing listening, an oversized operation.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;

/// How the fake listener treats its connections.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads two batches, then answers the second first. Each read finds
    /// its own key as the stored versions.
    Reversed,
    /// The first connection reads one batch and closes without answering;
    /// later connections answer at once.
    HangUpFirst,
    /// Refuses every hello.
    Refuse,
    /// Reads everything, answers nothing, not even pings.
    Silent,
    /// Speaks HTTP/2 only, as a node of an older version: sends its
    /// SETTINGS frame, reads the preamble as a bad preface, and hangs up.
    Http2Only,
}

/// A fake listener on loopback; returns its address and a count of the
/// connections it took.
async fn listener(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(fake_connection(stream, behaviour, first));
        }
    });
    (address, connections)
}

async fn fake_connection(stream: TcpStream, behaviour: Behaviour, first: bool) {
    let (mut rd, mut wr) = stream.into_split();
    if let Behaviour::Http2Only = behaviour {
        use tokio::io::AsyncReadExt;
        // An empty SETTINGS frame, then a GOAWAY (PROTOCOL_ERROR).
        let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
        let goaway = [0u8, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        wr.write_all(&settings).await.unwrap();
        let mut preface = [0u8; 24];
        let _ = rd.read(&mut preface).await;
        let _ = wr.write_all(&goaway).await;
        return;
    }
    let mut frames = FrameReader::new(rd, 1 << 20);
    frames.preamble().await.unwrap();
    let Ok(Some(Kind::Hello(hello))) = frames.next().await else {
        panic!("the dialler's first frame is its hello");
    };
    assert_eq!(hello.from, "n1");
    let mut out = BytesMut::new();
    let mut write = |kind: Kind| {
        out.clear();
        wire::encode(kind, &mut out);
        out.clone()
    };
    if !matches!(behaviour, Behaviour::Refuse) {
        wr.write_all(&write(Kind::Welcome(pb::FrameWelcome {})))
            .await
            .unwrap();
    }
    match behaviour {
        Behaviour::Refuse => {
            let refusal = pb::FrameRefusal {
                code: Code::PermissionDenied as i32,
                message: "not a member".into(),
            };
            let _ = wr.write_all(&write(Kind::Refused(refusal))).await;
            // Read on until the dialler hangs up (closing with its batch
            // unread would reset the connection).
            while let Ok(Some(_)) = frames.next().await {}
        }
        Behaviour::HangUpFirst if first => {
            let _ = frames.next().await;
        }
        Behaviour::Silent => while let Ok(Some(_)) = frames.next().await {},
        Behaviour::Http2Only => unreachable!("answered above"),
        Behaviour::HangUpFirst => {
            while let Ok(Some(frame)) = frames.next().await {
                if let Kind::Batch(batch) = frame {
                    let answer = write(Kind::Answer(answer(&batch)));
                    wr.write_all(&answer).await.unwrap();
                }
            }
        }
        Behaviour::Reversed => loop {
            let mut batches = Vec::new();
            while batches.len() < 2 {
                match frames.next().await {
                    Ok(Some(Kind::Batch(batch))) => batches.push(batch),
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
            for batch in batches.iter().rev() {
                let answer = write(Kind::Answer(answer(batch)));
                wr.write_all(&answer).await.unwrap();
            }
        },
    }
}

/// A fake peer's answer: each read finds its own key as the stored
/// versions; each replicate succeeds.
pub(in crate::transport) fn answer(batch: &pb::BatchRequest) -> pb::BatchResponse {
    let results = batch
        .items
        .iter()
        .map(|item| match &item.op {
            Some(pb::batch_item::Op::Read(read)) => pb::BatchResult {
                found: true,
                version_set: read.key.clone(),
                ..Default::default()
            },
            _ => pb::BatchResult::default(),
        })
        .collect();
    pb::BatchResponse {
        results,
        id: batch.id,
    }
}

fn link(address: &str, ping: Duration) -> Link {
    let settings = Settings {
        hello: pb::FrameHello {
            from: "n1".into(),
            to: "n2".into(),
            cluster: String::new(),
        },
        max_batch_bytes: 1000,
        max_item_bytes: 2000,
        max_frame: 1 << 20,
        ping_interval: ping,
        ping_timeout: ping,
    };
    let dialler = Dialler {
        address: address.to_string(),
        tls: None,
    };
    Link::start(dialler, settings, None)
}

pub(in crate::transport) fn read(key: &'static str) -> pb::BatchItem {
    pb::BatchItem {
        op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
            key: bytes::Bytes::from_static(key.as_bytes()),
        })),
    }
}

pub(in crate::transport) fn replicate(bytes: usize) -> pb::BatchItem {
    pb::BatchItem {
        op: Some(pb::batch_item::Op::Replicate(pb::ReplicateRequest {
            key: bytes::Bytes::from_static(b"k"),
            version_set: vec![1; bytes].into(),
            from: String::new(),
            hint_for: String::new(),
        })),
    }
}

const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn answers_in_any_order_reach_their_own_callers() {
    let (address, _) = listener(Behaviour::Reversed).await;
    let link = Arc::new(link(&address, LONG));
    for _ in 0..3 {
        // The first leaves alone; the second, a moment later, too (one
        // batch in flight is below the limit): two batches, answered in
        // reverse.
        let first = link.clone();
        let a = tokio::spawn(async move { first.call(read("a"), 1, LONG).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = link.call(read("b"), 1, LONG).await;
        assert_eq!(&a.await.unwrap().unwrap().version_set[..], b"a");
        assert_eq!(&b.unwrap().version_set[..], b"b");
    }
}

#[tokio::test]
async fn a_batch_unanswered_when_the_peer_hangs_up_is_lost_and_the_next_call_reconnects() {
    let (address, connections) = listener(Behaviour::HangUpFirst).await;
    let link = link(&address, LONG);
    let lost = link.call(read("a"), 1, LONG).await.unwrap_err();
    assert_eq!(lost.failure, Failure::Lost, "{lost}");
    assert!(lost.is_unreachable());
    let answered = link.call(read("b"), 1, LONG).await.unwrap();
    assert_eq!(&answered.version_set[..], b"b");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_hello_fails_the_operation_with_the_refusal() {
    let (address, _) = listener(Behaviour::Refuse).await;
    let refused = link(&address, LONG)
        .call(replicate(10), 10, LONG)
        .await
        .unwrap_err();
    assert_eq!(
        refused.failure,
        Failure::Refused(ringkv_core::error::Code::PermissionDenied),
        "{refused}"
    );
    assert!(refused.message.contains("not a member"), "{refused}");
}

#[tokio::test]
async fn a_peer_that_answers_nothing_not_even_pings_is_given_up() {
    let (address, _) = listener(Behaviour::Silent).await;
    let ping = Duration::from_millis(100);
    let started = Instant::now();
    let lost = link(&address, ping)
        .call(replicate(10), 10, LONG)
        .await
        .unwrap_err();
    assert_eq!(lost.failure, Failure::Lost, "{lost}");
    assert!(lost.message.contains("sent nothing"), "{lost}");
    assert!(
        started.elapsed() < LONG,
        "given up by the pings, not the deadline"
    );
}

#[tokio::test]
async fn a_caller_past_its_deadline_times_out_alone() {
    let (address, _) = listener(Behaviour::Silent).await;
    let link = link(&address, LONG);
    let late = link
        .call(replicate(10), 10, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(late.failure, Failure::Timeout, "{late}");
}

#[tokio::test]
async fn with_nothing_listening_every_waiting_operation_is_not_sent() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let link = link(&format!("127.0.0.1:{port}"), LONG);
    let (a, b) = tokio::join!(
        link.call(replicate(10), 10, LONG),
        link.call(replicate(10), 10, LONG)
    );
    for failed in [a.unwrap_err(), b.unwrap_err()] {
        assert_eq!(failed.failure, Failure::NotSent, "{failed}");
        assert!(failed.never_sent());
    }
}

#[tokio::test]
async fn an_oversized_operation_fails_alone_before_it_is_sent() {
    let (address, _) = listener(Behaviour::HangUpFirst).await;
    let link = link(&address, LONG);
    // The first connection hangs up; use it up first.
    let _ = link.call(read("x"), 1, LONG).await;
    let (big, small) = tokio::join!(
        link.call(replicate(2001), 2001, LONG),
        link.call(replicate(10), 10, LONG),
    );
    let big = big.unwrap_err();
    assert_eq!(big.failure, Failure::TooLarge, "{big}");
    assert!(big.message.starts_with(ringkv_peer::TOO_LARGE), "{big}");
    assert!(
        !big.is_unreachable(),
        "an oversized item says nothing about the peer"
    );
    small.unwrap();
}

#[tokio::test]
async fn a_peer_that_speaks_no_replica_stream_was_sent_nothing() {
    let (address, _) = listener(Behaviour::Http2Only).await;
    let failed = link(&address, LONG)
        .call(replicate(10), 10, LONG)
        .await
        .unwrap_err();
    assert_eq!(failed.failure, Failure::NotSent, "{failed}");
    assert!(failed.message.contains("older ringkv"), "{failed}");
}
