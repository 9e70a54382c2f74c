//! Wire formats: the channel header and the signal frame.
//!
//! - A channel (bidirectional stream) starts with `u16` big-endian length + the UTF-8 name.
//! - A signal (unidirectional stream) is `u16` length + UTF-8 kind, then the payload up to
//!   the end of the stream.

/// Longest channel name accepted.
pub const MAX_CHANNEL_NAME: usize = 1024;
/// Longest signal kind accepted.
pub const MAX_SIGNAL_KIND: usize = 256;
/// Largest signal payload accepted.
pub const MAX_SIGNAL_PAYLOAD: usize = 64 * 1024;
/// Largest signal frame accepted (kind and payload with their headers).
pub const MAX_SIGNAL_FRAME: usize = 2 + MAX_SIGNAL_KIND + MAX_SIGNAL_PAYLOAD;

/// Why bytes received from a peer were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The channel name is longer than [`MAX_CHANNEL_NAME`].
    #[error("channel name of {0} bytes is too long (max {MAX_CHANNEL_NAME})")]
    NameTooLong(usize),
    /// The signal kind is empty or longer than [`MAX_SIGNAL_KIND`].
    #[error("signal kind of {0} bytes is empty or too long (max {MAX_SIGNAL_KIND})")]
    BadKindLength(usize),
    /// The signal payload is larger than [`MAX_SIGNAL_PAYLOAD`].
    #[error("signal payload of {0} bytes is too large (max {MAX_SIGNAL_PAYLOAD})")]
    PayloadTooLarge(usize),
    /// The frame ends before its header does.
    #[error("truncated frame")]
    Truncated,
    /// A name or kind is not UTF-8.
    #[error("name or kind is not UTF-8")]
    NotUtf8,
}

/// Encodes a channel header.
pub fn encode_channel_header(name: &str) -> Result<Vec<u8>, FrameError> {
    if name.len() > MAX_CHANNEL_NAME {
        return Err(FrameError::NameTooLong(name.len()));
    }
    let mut out = Vec::with_capacity(2 + name.len());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

/// Checks a channel header's announced length before its name is read.
pub fn check_channel_name_length(len: u16) -> Result<usize, FrameError> {
    let len = usize::from(len);
    if len > MAX_CHANNEL_NAME {
        return Err(FrameError::NameTooLong(len));
    }
    Ok(len)
}

/// Encodes a signal frame.
pub fn encode_signal(kind: &str, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if kind.is_empty() || kind.len() > MAX_SIGNAL_KIND {
        return Err(FrameError::BadKindLength(kind.len()));
    }
    if payload.len() > MAX_SIGNAL_PAYLOAD {
        return Err(FrameError::PayloadTooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(2 + kind.len() + payload.len());
    out.extend_from_slice(&(kind.len() as u16).to_be_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Decodes a signal frame (the whole unidirectional stream).
pub fn decode_signal(frame: &[u8]) -> Result<(String, Vec<u8>), FrameError> {
    let (len, rest) = frame
        .split_first_chunk::<2>()
        .ok_or(FrameError::Truncated)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len == 0 || len > MAX_SIGNAL_KIND {
        return Err(FrameError::BadKindLength(len));
    }
    if rest.len() < len {
        return Err(FrameError::Truncated);
    }
    let (kind, payload) = rest.split_at(len);
    if payload.len() > MAX_SIGNAL_PAYLOAD {
        return Err(FrameError::PayloadTooLarge(payload.len()));
    }
    let kind = std::str::from_utf8(kind).map_err(|_| FrameError::NotUtf8)?;
    Ok((kind.to_string(), payload.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_round_trip_and_refusals() {
        let f = encode_signal("application/x", b"hello").unwrap();
        assert_eq!(
            decode_signal(&f).unwrap(),
            ("application/x".to_string(), b"hello".to_vec())
        );
        assert_eq!(decode_signal(&[]), Err(FrameError::Truncated));
        assert_eq!(decode_signal(&[0]), Err(FrameError::Truncated));
        assert_eq!(decode_signal(&[0, 0]), Err(FrameError::BadKindLength(0)));
        assert_eq!(decode_signal(&[0, 5, b'a']), Err(FrameError::Truncated));
        assert_eq!(decode_signal(&[0, 1, 0xff]), Err(FrameError::NotUtf8));
        assert_eq!(
            decode_signal(&[0xff, 0xff]),
            Err(FrameError::BadKindLength(0xffff))
        );
        let big = vec![0u8; MAX_SIGNAL_PAYLOAD + 1];
        assert!(encode_signal("k", &big).is_err());
        let mut f = encode_signal("k", &[]).unwrap();
        f.extend_from_slice(&big);
        assert_eq!(
            decode_signal(&f),
            Err(FrameError::PayloadTooLarge(MAX_SIGNAL_PAYLOAD + 1))
        );
        assert!(encode_channel_header(&"x".repeat(MAX_CHANNEL_NAME + 1)).is_err());
        assert!(check_channel_name_length(u16::MAX).is_err());
    }
}
