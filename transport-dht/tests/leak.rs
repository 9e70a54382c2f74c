//! No runner, callback context or listen token outlives its owner: many runners with listens,
//! gets and puts are created and dropped, and the live counts return to zero. (Its own test
//! binary, so no other test's handles are counted.)

mod common;

use std::time::Duration;

use transport_dht::ffi::{live_counts, LiveCounts};
use transport_dht::{InfoHash, Runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_listens_gets_and_puts_leave_nothing_behind() {
    let Some(net) = common::testnet(1).await else {
        return;
    };
    let boot = net.addrs()[0];
    for round in 0..3u8 {
        let mut runners = Vec::new();
        let mut listens = Vec::new();
        let mut pending = Vec::new();
        for i in 0..8u8 {
            let r = Runner::start(0).expect("runner");
            r.bootstrap("127.0.0.1", boot.port()).expect("bootstrap");
            for j in 0..4u8 {
                listens.push(r.listen(InfoHash::of(&[round, i, j])));
            }
            pending.push(r.get(InfoHash::of(&[round, i])));
            drop(r.put(InfoHash::of(&[round, i]), b"v"));
            runners.push(r);
        }
        let live = live_counts();
        assert_eq!(live.runners, 8);
        assert_eq!(live.tokens, 32);
        assert!(
            live.contexts >= 32,
            "listen contexts are registered: {live:?}"
        );
        // Half the listens are cancelled while their runner lives, the rest with it.
        listens.truncate(16);
        drop(runners);
        drop(listens);
        drop(pending);
        common::eventually(Duration::from_secs(10), "all handles released", || async {
            (live_counts() == LiveCounts::default()).then_some(())
        })
        .await;
    }
}
