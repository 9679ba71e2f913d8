//! The tunnel path's pieces: the idle computation, idle_copy's counts, event bounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{EVENT_FIELD_MAX, bounded, idle_copy, idle_for};

#[test]
fn idle_time_never_underflows() {
    // `last` written by a copying half after the watchdog read the clock (review O2).
    assert_eq!(idle_for(5, 7), 0);
    assert_eq!(idle_for(0, u64::MAX), 0);
    assert_eq!(idle_for(10, 4), 6);
}

#[test]
fn idle_copy_counts_as_it_goes_and_ends_when_idle() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let peers = async {
            a_peer.write_all(b"hello").await.unwrap();
            let mut got = [0u8; 5];
            b_peer.read_exact(&mut got).await.unwrap();
            b_peer.write_all(b"wor").await.unwrap();
            let mut back = [0u8; 3];
            a_peer.read_exact(&mut back).await.unwrap();
            (a_peer, b_peer) // held open: only the idle limit ends the copy
        };
        let copy = idle_copy(&mut a, &mut b, Duration::from_millis(200), (&up, &down));
        let (counts, _peers) = futures_util::future::join(copy, peers).await;
        assert_eq!(counts, (5, 3));
        assert_eq!(up.load(Ordering::Relaxed), 5);
        assert_eq!(down.load(Ordering::Relaxed), 3);
    });
}

#[test]
fn event_fields_are_bounded() {
    assert_eq!(bounded("api.example.com"), "api.example.com");
    let long = "a".repeat(60 * 1024);
    let b = bounded(&long);
    assert!(b.len() < EVENT_FIELD_MAX + 32, "{}", b.len());
    assert!(
        b.ends_with("...[61440 bytes]"),
        "{}",
        &b[EVENT_FIELD_MAX - 4..]
    );
    // A cut inside a multi-byte char moves back to its start.
    let wide = format!("{}é{}", "a".repeat(EVENT_FIELD_MAX - 1), "b".repeat(10));
    let b = bounded(&wide);
    assert!(b.starts_with(&"a".repeat(EVENT_FIELD_MAX - 1)));
    assert!(!b.contains('é'));
}
