//! A hostile peer answering a fetch over a real byte stream (a tokio duplex): whatever it
//! sends beyond what validated commits reach is never stored (#15 item 4).

mod common;

use common::*;
use swarm_api::body::{Body, Mode};
use swarm_api::graph::Graph;
use swarm_api::object::Object;
use swarm_api::storage::Storage;
use swarm_api::sync::{self, BundleLimits, Decoder, Frame, MergePolicy};
use swarm_api::validate::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves one fetch on `stream` by answering the client's hello with a bundle of `objects`
/// whose tip is `tip`, whatever the client asked.
async fn answer(
    mut stream: tokio::io::DuplexStream,
    tip: swarm_api::CommitId,
    objects: Vec<Object>,
) {
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(Some(Frame::Hello { .. })) = dec.next_frame() {
            break;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before its hello");
        dec.push(&buf[..n]);
    }
    let mut out = Frame::BundleStart {
        head: tip,
        objects: objects.len() as u32,
        bytes: objects.iter().map(|o| o.data.len() as u64).sum(),
    }
    .encode();
    for o in objects {
        out.extend(Frame::Object(o).encode());
    }
    out.extend(Frame::BundleEnd.encode());
    stream.write_all(&out).await.unwrap();
    // Keep the stream open until the client is done reading.
    let _ = stream.read(&mut buf).await;
}

/// Junk a peer may add: a blob, a tree, and a validly signed commit on no branch.
fn junk(w: &W, who: &P) -> Vec<Object> {
    let stray = w.draft(who, &Body::text("on no branch").to_message(), &[], false);
    let blob = Object::blob(vec![7u8; 10_000]);
    let (_, trees) =
        swarm_api::object::build_tree(&[("junk/x".to_owned(), blob.id())].into_iter().collect());
    let mut junk = vec![blob];
    junk.extend(trees);
    junk.extend(
        stray
            .objects
            .into_iter()
            .filter(|o| o.id() == stray.id.object_id()),
    );
    junk
}

async fn fetch_from_hostile(
    w: &W,
    me: &P,
    tip: swarm_api::CommitId,
    objects: Vec<Object>,
) -> Option<sync::Integrated> {
    let (mut ours, theirs) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(answer(theirs, tip, objects));
    let graph = tokio::sync::Mutex::new(Graph::new());
    let (integrated, _) = sync::fetch(
        &mut ours,
        w.conv,
        &w.st,
        &Engine::default(),
        &graph,
        MergePolicy::Always(&me.s()),
        T,
        BundleLimits::default(),
    )
    .await
    .expect("the fetch succeeds");
    drop(ours);
    server.await.unwrap();
    integrated
}

fn assert_not_stored(w: &W, objects: &[Object]) {
    for o in objects {
        assert_eq!(
            w.st.object(&w.conv, &o.id()).unwrap(),
            None,
            "junk {} {} was stored",
            o.kind,
            o.id()
        );
    }
}

/// A peer answering with our own head plus junk moves nothing and stores none of it.
#[tokio::test]
async fn our_own_head_plus_junk_stores_nothing() {
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::new(&a, Mode::InvitesOnly);
    w.invite_and_join(&a, &b);
    let head = w.head();
    let junk = junk(&w, &b);
    let i = fetch_from_hostile(&w, &a, head, junk.clone())
        .await
        .unwrap();
    assert!(i.new_commits.is_empty());
    assert_eq!(w.head(), head);
    assert_not_stored(&w, &junk);
}

/// A peer answering with a valid new commit plus junk: the commit is integrated, the junk is
/// not stored.
#[tokio::test]
async fn a_valid_commit_plus_junk_stores_only_the_commit() {
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::new(&a, Mode::InvitesOnly);
    w.invite_and_join(&a, &b);
    let good = w.draft(&b, &Body::text("hi").to_message(), &[], false);
    let junk = junk(&w, &b);
    let mut sent = good.objects.clone();
    sent.extend(junk.iter().cloned());
    let i = fetch_from_hostile(&w, &a, good.id, sent).await.unwrap();
    assert_eq!(i.new_commits, vec![good.id]);
    assert_eq!(w.head(), good.id);
    for o in &good.objects {
        assert!(w.st.object(&w.conv, &o.id()).unwrap().is_some());
    }
    assert_not_stored(&w, &junk);
    w.repo().verify().unwrap();
}

/// #15 item 6: a device its account revoked in the conversation is not served, even though
/// its account is a member (a transport without CRLs would let it connect).
#[tokio::test]
async fn a_device_revoked_in_the_conversation_is_not_served() {
    use swarm_api::layout;
    use swarm_api::repo::FileChange;
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::new(&a, Mode::InvitesOnly);
    w.invite_and_join(&a, &b);
    let phone = a.other_device();
    w.text(&phone, "from my phone");
    let serve_to = |dev: &P| {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let peer = sync::Peer {
            device: dev.device.id(),
            account: dev.uri(),
        };
        let graph = tokio::sync::Mutex::new(Graph::new());
        let st = &w.st;
        async move {
            let hello = Frame::Hello {
                version: sync::wire::VERSION,
                conv: w.conv,
                head: None,
            };
            ours.write_all(&hello.encode()).await.unwrap();
            let _ = sync::serve(&mut theirs, peer, st, &Engine::default(), &graph).await;
            drop(theirs);
            let mut bytes = Vec::new();
            ours.read_to_end(&mut bytes).await.unwrap();
            let mut dec = Decoder::new();
            dec.push(&bytes);
            dec.next_frame().unwrap().unwrap()
        }
    };
    assert!(matches!(serve_to(&phone).await, Frame::BundleStart { .. }));
    let crl = a.account.crl(&[phone.device.cert()], 2, now()).unwrap();
    w.ok(
        &a,
        (
            Body::text("revoking my phone"),
            vec![FileChange::Write(
                layout::crl(&a.uri(), &crl.id()),
                crl.pem().as_bytes().to_vec(),
            )],
        ),
    );
    match serve_to(&phone).await {
        Frame::Refused(r) => assert!(r.contains("revoked"), "{r}"),
        other => panic!("served a revoked device: {other:?}"),
    }
    assert!(matches!(serve_to(&a).await, Frame::BundleStart { .. }));
}

/// A stream that reports (once) when it has handed its reader the first bytes.
struct ReportsFirstRead {
    inner: tokio::io::DuplexStream,
    first: Option<std::sync::mpsc::Sender<()>>,
}

impl tokio::io::AsyncRead for ReportsFirstRead {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            if let Some(tx) = self.first.take() {
                let _ = tx.send(());
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for ReportsFirstRead {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A serve that must wait for the conversation's graph (an integration holds it on the
/// blocking pool, for as long as validation and the write take) holds no runtime worker:
/// on a runtime of one worker, another task still runs meanwhile, and the serve answers once
/// the graph is released. (With a blocking lock the only worker would wait inside the serve
/// and nothing else would run: QUIC, timers, the control socket.)
#[test]
fn a_serve_waiting_for_the_graph_holds_no_runtime_worker() {
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = (P::new("Alice"), P::new("Bob"));
    let w = W::new(&a, Mode::InvitesOnly);
    w.invite_and_join(&a, &b);
    let w = Arc::new(w);
    let graph = Arc::new(tokio::sync::Mutex::new(Graph::new()));
    let integration = graph.clone().try_lock_owned().unwrap();
    let (mut ours, theirs) = tokio::io::duplex(1 << 20);
    let hello = Frame::Hello {
        version: sync::wire::VERSION,
        conv: w.conv,
        head: None,
    };
    rt.block_on(ours.write_all(&hello.encode())).unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let mut theirs = ReportsFirstRead {
        inner: theirs,
        first: Some(first_tx),
    };
    let peer = sync::Peer {
        device: b.device.id(),
        account: b.uri(),
    };
    let serving = {
        let (w, graph) = (w.clone(), graph.clone());
        rt.spawn(
            async move { sync::serve(&mut theirs, peer, &w.st, &Engine::default(), &graph).await },
        )
    };
    // The serve read the hello: in the same poll it goes on to take the graph.
    first_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the serve read the hello");
    let (ping_tx, ping_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = ping_tx.send(());
    });
    let pinged = ping_rx.recv_timeout(std::time::Duration::from_secs(60));
    drop(integration);
    assert!(
        pinged.is_ok(),
        "a task could not run while the serve waited for the graph"
    );
    let answer = rt.block_on(async {
        let mut dec = Decoder::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = dec.next_frame().unwrap() {
                break f;
            }
            let n = ours.read(&mut buf).await.unwrap();
            assert!(n > 0, "the serve closed without answering");
            dec.push(&buf[..n]);
        }
    });
    assert!(
        matches!(answer, Frame::BundleStart { .. }),
        "the serve answered the member's hello once the graph was free: {answer:?}"
    );
    drop(ours);
    let _ = rt.block_on(serving);
}
