//! Sync wire frames: the streaming decoder and the one-frame decoder never panic, and what
//! decodes re-encodes to a frame that decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use swarm_api::sync::wire::{Decoder, Frame};

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new();
    // Pushed in two pieces: a frame split anywhere decodes the same.
    let cut = data.first().map_or(0, |b| *b as usize % (data.len() + 1));
    d.push(&data[..cut]);
    d.push(&data[cut..]);
    while let Ok(Some(f)) = d.next_frame() {
        let mut again = Decoder::new();
        again.push(&f.encode());
        assert_eq!(again.next_frame().ok().flatten().as_ref(), Some(&f));
    }
    let _ = Frame::decode(data);
});
