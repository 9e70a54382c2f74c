//! Every decoder that reads bytes from a peer or a file gets arbitrary input: it returns a
//! typed error or a value, never panics, and what it encodes it decodes back.

use proptest::prelude::*;
use swarm_api::body::Body;
use swarm_api::commit::Commit;
use swarm_api::id::{CommitId, ConversationId};
use swarm_api::identity::{AccountCert, Crl, DeviceCert};
use swarm_api::layout::Path;
use swarm_api::object::Object;
use swarm_api::sync::wire::{Decoder, Frame};

fn frame() -> impl Strategy<Value = Frame> {
    let id = any::<[u8; 20]>().prop_map(CommitId::from_bytes);
    prop_oneof![
        (any::<u16>(), id.clone(), proptest::option::of(id.clone())).prop_map(
            |(version, c, head)| Frame::Hello {
                version,
                conv: ConversationId(c),
                head
            }
        ),
        ".{0,40}".prop_map(Frame::Refused),
        Just(Frame::UpToDate),
        proptest::collection::vec(id.clone(), 0..40).prop_map(Frame::Probe),
        proptest::collection::vec(any::<bool>(), 0..8).prop_map(|mut b| {
            b.resize(8, false);
            Frame::Known(b)
        }),
        (id, any::<u32>(), any::<u64>()).prop_map(|(head, objects, bytes)| Frame::BundleStart {
            head,
            objects,
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| Frame::Object(Object::blob(d))),
        Just(Frame::BundleEnd),
    ]
}

proptest! {
    #[test]
    fn wire_frames_round_trip_in_any_chunking(frames in proptest::collection::vec(frame(), 0..12), chunk in 1usize..64) {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in bytes.chunks(chunk) {
            d.push(c);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn the_wire_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut d = Decoder::new();
        d.push(&bytes);
        for _ in 0..64 {
            match d.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn bodies_commits_paths_and_certificates_never_panic(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(b) = Body::parse(&text) {
            // What parses re-encodes canonically and parses to the same body.
            prop_assert_eq!(Body::parse(&b.to_message()).unwrap(), b);
        }
        let _ = Commit::parse(CommitId::from_bytes([0; 20]), &bytes);
        let _ = Path::parse(&text);
        let _ = AccountCert::from_pem(&text);
        let _ = DeviceCert::from_pem(&text);
        let _ = Crl::from_pem(&text);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", text);
        let _ = DeviceCert::from_pem(&pem);
    }
}
