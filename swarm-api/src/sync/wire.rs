//! The sync wire format, version 1: length-prefixed binary frames.
//!
//! ```text
//! frame   = len:u32be tag:u8 body          (len counts tag + body; at most MAX_FRAME)
//! 0x01 Hello       version:u16be conv:20 has_head:u8 [head:20]
//! 0x02 Refused     reason:utf8
//! 0x03 UpToDate
//! 0x04 Probe       count:u16be ids:20*count
//! 0x05 Known       bitmap:ceil(count/8)   (bit i = the i-th probed id is known)
//! 0x06 BundleStart head:20 objects:u32be bytes:u64be
//! 0x07 Object      kind:u8 data           (kind: 1 commit, 2 tree, 3 blob)
//! 0x08 BundleEnd
//! ```
//! Every decoder path returns a typed [`WireError`] on malformed input; nothing panics and no
//! frame larger than [`MAX_FRAME`] is buffered.

use crate::id::{CommitId, ConversationId};
use crate::object::{Kind, Object};

/// The protocol version this implementation speaks.
pub const VERSION: u16 = 1;
/// The largest frame accepted (a blob at the validator's limit plus headers).
pub const MAX_FRAME: usize = 9 * 1024 * 1024;
/// The most ids one probe carries.
pub const MAX_PROBE: usize = 512;

/// A protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server: which conversation, which version, what the client has.
    Hello {
        /// Protocol version.
        version: u16,
        /// The conversation.
        conv: ConversationId,
        /// The client's head (`None`: it has nothing, a clone).
        head: Option<CommitId>,
    },
    /// Server → client: not allowed (not a member, unknown conversation, version...).
    Refused(String),
    /// Server → client: nothing to send.
    UpToDate,
    /// Server → client: are these commits known to you?
    Probe(Vec<CommitId>),
    /// Client → server: which probed ids are known (one bit each, in order).
    Known(Vec<bool>),
    /// Server → client: a bundle follows.
    BundleStart {
        /// The server's head: the tip of the bundle.
        head: CommitId,
        /// Number of objects that follow.
        objects: u32,
        /// Their total size in bytes.
        bytes: u64,
    },
    /// One object of the bundle.
    Object(Object),
    /// End of the bundle.
    BundleEnd,
}

/// Malformed or hostile input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    FrameTooLarge(usize),
    /// An empty frame.
    #[error("empty frame")]
    Empty,
    /// An unknown frame tag.
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// A frame body that does not match its tag.
    #[error("malformed {what} frame")]
    Malformed {
        /// The frame kind.
        what: &'static str,
    },
}

fn object_kind_byte(k: Kind) -> u8 {
    match k {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    }
}

fn object_kind(b: u8) -> Option<Kind> {
    Some(match b {
        1 => Kind::Commit,
        2 => Kind::Tree,
        3 => Kind::Blob,
        _ => return None,
    })
}

impl Frame {
    /// Encodes the frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Frame::Hello {
                version,
                conv,
                head,
            } => {
                body.push(0x01);
                body.extend_from_slice(&version.to_be_bytes());
                body.extend_from_slice(conv.0.as_bytes());
                match head {
                    Some(h) => {
                        body.push(1);
                        body.extend_from_slice(h.as_bytes());
                    }
                    None => body.push(0),
                }
            }
            Frame::Refused(r) => {
                body.push(0x02);
                body.extend_from_slice(r.as_bytes());
            }
            Frame::UpToDate => body.push(0x03),
            Frame::Probe(ids) => {
                body.push(0x04);
                body.extend_from_slice(&(ids.len() as u16).to_be_bytes());
                for id in ids {
                    body.extend_from_slice(id.as_bytes());
                }
            }
            Frame::Known(bits) => {
                body.push(0x05);
                let mut bytes = vec![0u8; bits.len().div_ceil(8)];
                for (i, b) in bits.iter().enumerate() {
                    if *b {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                body.extend_from_slice(&bytes);
            }
            Frame::BundleStart {
                head,
                objects,
                bytes,
            } => {
                body.push(0x06);
                body.extend_from_slice(head.as_bytes());
                body.extend_from_slice(&objects.to_be_bytes());
                body.extend_from_slice(&bytes.to_be_bytes());
            }
            Frame::Object(o) => {
                body.push(0x07);
                body.push(object_kind_byte(o.kind));
                body.extend_from_slice(&o.data);
            }
            Frame::BundleEnd => body.push(0x08),
        }
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes one frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
        let (&tag, rest) = body.split_first().ok_or(WireError::Empty)?;
        let id20 = |b: &[u8], what| -> Result<[u8; 20], WireError> {
            b.try_into().map_err(|_| WireError::Malformed { what })
        };
        Ok(match tag {
            0x01 => {
                let what = "Hello";
                if rest.len() < 23 {
                    return Err(WireError::Malformed { what });
                }
                let version = u16::from_be_bytes([rest[0], rest[1]]);
                let conv = ConversationId(CommitId::from_bytes(id20(&rest[2..22], what)?));
                let head = match (rest[22], rest.len()) {
                    (0, 23) => None,
                    (1, 43) => Some(CommitId::from_bytes(id20(&rest[23..43], what)?)),
                    _ => return Err(WireError::Malformed { what }),
                };
                Frame::Hello {
                    version,
                    conv,
                    head,
                }
            }
            0x02 => Frame::Refused(String::from_utf8_lossy(rest).into_owned()),
            0x03 if rest.is_empty() => Frame::UpToDate,
            0x04 => {
                let what = "Probe";
                if rest.len() < 2 {
                    return Err(WireError::Malformed { what });
                }
                let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                if n > MAX_PROBE || rest.len() != 2 + 20 * n {
                    return Err(WireError::Malformed { what });
                }
                Frame::Probe(
                    rest[2..]
                        .chunks_exact(20)
                        .map(|c| id20(c, what).map(CommitId::from_bytes))
                        .collect::<Result<_, _>>()?,
                )
            }
            0x05 => {
                if rest.len() > MAX_PROBE.div_ceil(8) {
                    return Err(WireError::Malformed { what: "Known" });
                }
                Frame::Known(
                    (0..rest.len() * 8)
                        .map(|i| rest[i / 8] & (1 << (i % 8)) != 0)
                        .collect(),
                )
            }
            0x06 => {
                let what = "BundleStart";
                if rest.len() != 32 {
                    return Err(WireError::Malformed { what });
                }
                Frame::BundleStart {
                    head: CommitId::from_bytes(id20(&rest[..20], what)?),
                    objects: u32::from_be_bytes([rest[20], rest[21], rest[22], rest[23]]),
                    bytes: u64::from_be_bytes(
                        rest[24..32]
                            .try_into()
                            .map_err(|_| WireError::Malformed { what })?,
                    ),
                }
            }
            0x07 => {
                let (&k, data) = rest
                    .split_first()
                    .ok_or(WireError::Malformed { what: "Object" })?;
                let kind = object_kind(k).ok_or(WireError::Malformed { what: "Object" })?;
                Frame::Object(Object {
                    kind,
                    data: data.to_vec(),
                })
            }
            0x08 if rest.is_empty() => Frame::BundleEnd,
            0x03 | 0x08 => {
                return Err(WireError::Malformed {
                    what: "empty-bodied",
                })
            }
            t => return Err(WireError::UnknownTag(t)),
        })
    }
}

/// Accumulates bytes from a stream and yields frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. A frame announcing more
    /// than [`MAX_FRAME`] bytes is an error before its body is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::FrameTooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = Frame::decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        frame.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips_through_the_decoder_byte_by_byte() {
        let c = CommitId::from_bytes([7; 20]);
        let frames = vec![
            Frame::Hello {
                version: VERSION,
                conv: ConversationId(c),
                head: Some(c),
            },
            Frame::Hello {
                version: VERSION,
                conv: ConversationId(c),
                head: None,
            },
            Frame::Refused("not a member".into()),
            Frame::UpToDate,
            Frame::Probe(vec![c, CommitId::from_bytes([1; 20])]),
            Frame::Known(vec![
                true, false, true, false, false, false, false, false, true,
            ]),
            Frame::BundleStart {
                head: c,
                objects: 3,
                bytes: 99,
            },
            Frame::Object(Object::blob(b"data".to_vec())),
            Frame::BundleEnd,
        ];
        let mut d = Decoder::new();
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut out = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        // Known pads to whole bytes.
        let Frame::Known(bits) = &out[5] else {
            panic!()
        };
        assert_eq!(
            &bits[..9],
            &[true, false, true, false, false, false, false, false, true]
        );
        out[5] = frames[5].clone();
        assert_eq!(out, frames);
    }

    #[test]
    fn hostile_frames_are_typed_errors() {
        let mut d = Decoder::new();
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(WireError::FrameTooLarge(_))));
        for body in [
            &[][..],
            &[0x99],
            &[0x01, 0, 1],
            &[0x04, 0, 5, 1, 2],
            &[0x07, 9, 1],
            &[0x03, 1],
        ] {
            assert!(Frame::decode(body).is_err(), "{body:?}");
        }
    }
}
